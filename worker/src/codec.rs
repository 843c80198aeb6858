//! Codecs: read a file's header (for planning), decode a file straight into its slot, encode a
//! slot to a file through a temporary file and a rename.
//!
//! What a file is comes from its magic bytes, never from its name. EXIF orientation is applied
//! on decode, so the slot holds what a viewer shows. This module never touches the block itself:
//! it sees a slot as a `&mut [u8]` of a known shape.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use crate::jpeg::{Damage, Strictness};
use crate::metadata::Metadata;
use image::{
    ColorType, DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageFormat,
    ImageReader, Limits,
};

/// The formats shmpipe reads, in the order their index is stored in the block.
pub const FORMATS: [ImageFormat; 6] = [
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Default limit on the pixels of one image (128 megapixels).
pub const DEFAULT_MAX_PIXELS: u64 = 128_000_000;

/// Why a file could not be planned, decoded or written. Messages read well after "failed: ".
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot read file: {0}")]
    Read(#[source] io::Error),
    #[error("not an image (unrecognised content)")]
    NotAnImage,
    #[error("unsupported format {0:?}")]
    Unsupported(ImageFormat),
    #[error("image is {width}x{height} = {} pixels, over the limit of {max} (--max-pixels)", *width as u64 * *height as u64)]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("decode error: {0}")]
    Decode(String),
    /// A JPEG whose data ends early or does not decode cleanly.
    #[error("{0}")]
    Damaged(Damage),
    #[error("image changed since planning: now {now_w}x{now_h}, planned {plan_w}x{plan_h}")]
    Changed {
        now_w: u32,
        now_h: u32,
        plan_w: u32,
        plan_h: u32,
    },
    /// The reason comes first: a failure's reason is kept to 120 bytes in the block.
    #[error("cannot write output: {source} ({path})")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("encode error for {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
}

fn decode_err(e: image::ImageError) -> CodecError {
    if let Some(damage) = Damage::from_image_error(&e) {
        return CodecError::Damaged(damage.clone());
    }
    match e {
        image::ImageError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            CodecError::Decode("file is truncated".into())
        }
        image::ImageError::Unsupported(u) => CodecError::Decode(format!("unsupported: {u}")),
        image::ImageError::Limits(l) => CodecError::Decode(format!("limit exceeded: {l}")),
        other => CodecError::Decode(other.to_string()),
    }
}

/// What the planner learns from a file's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Index into [`FORMATS`].
    pub format: u32,
    /// Shape after EXIF orientation is applied.
    pub width: u32,
    pub height: u32,
    pub color: ColorType,
    /// The EXIF orientation the decoders apply.
    pub orientation: image::metadata::Orientation,
}

impl Probe {
    /// The channels that hold this image without loss: 1 gray, 2 gray and alpha, 3 colour, 4
    /// colour and alpha. Decoders report a palette as RGB or RGBA (by its transparency) and CMYK
    /// as RGB; 16-bit and float samples are kept at 8 bits.
    pub fn channels(&self) -> u32 {
        let color = self.color;
        match (color.has_color(), color.has_alpha()) {
            (false, false) => 1,
            (false, true) => 2,
            (true, false) => 3,
            (true, true) => 4,
        }
    }
}

/// A file's decoder: JPEG through [`crate::jpeg`] (damage is an error unless `strictness` is
/// lenient), the other formats through `image`, whose decoders already refuse truncated data.
fn open_decoder(
    path: &Path,
    max_pixels: u64,
    strictness: Strictness,
) -> Result<(Box<dyn ImageDecoder>, u32), CodecError> {
    let file = File::open(path).map_err(CodecError::Read)?;
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(CodecError::Read)?;
    let format = reader.format().ok_or(CodecError::NotAnImage)?;
    let index = FORMATS
        .iter()
        .position(|f| *f == format)
        .ok_or(CodecError::Unsupported(format))? as u32;
    // Read the header without limits, check its size ourselves (so a bomb gets a clear reason
    // before any memory is reserved), then hand the decoder image's own allocation limits.
    reader.no_limits();
    if format == ImageFormat::Png {
        // The PNG decoder reads every chunk before the pixels (inflating an iCCP profile in
        // full) under one byte budget, which nothing can raise later; the pixels go to the slot,
        // outside it. So the budget is for metadata and a few rows: an iCCP bomb is dropped by
        // the decoder at that size instead of inflated to gigabytes.
        let mut limits = Limits::no_limits();
        limits.max_alloc = Some(png_header_budget(path));
        reader.limits(limits);
    }
    let mut decoder: Box<dyn ImageDecoder> = if format == ImageFormat::Jpeg {
        Box::new(crate::jpeg::JpegDecoder::open(path, strictness).map_err(decode_err)?)
    } else {
        Box::new(reader.into_decoder().map_err(decode_err)?)
    };
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > max_pixels {
        return Err(CodecError::TooLarge {
            width,
            height,
            max: max_pixels,
        });
    }
    let mut limits = Limits::default();
    let side = max_pixels.min(u32::MAX as u64) as u32;
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    // A decoder may allocate about one decoded image (at most 8 bytes a pixel, 16-bit RGBA).
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    decoder.set_limits(limits).map_err(decode_err)?;
    Ok((decoder, index))
}

/// What a PNG's decoder may hold besides the pixels: the metadata a source may carry
/// ([`crate::metadata::MAX_ICC`] and comments) and a few rows of the widest pixel kind (16-bit
/// RGBA), the width read from the IHDR chunk.
fn png_header_budget(path: &Path) -> u64 {
    let mut head = [0u8; 24];
    let width = File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map_or(0, |()| {
            u32::from_be_bytes([head[16], head[17], head[18], head[19]])
        });
    (64 << 20) + width as u64 * 8 * 4
}

pub(crate) fn swaps_axes(o: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation::*;
    matches!(o, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH)
}

/// Reads only the header of `path`: format, colour type and oriented shape.
pub fn probe(path: &Path, max_pixels: u64) -> Result<Probe, CodecError> {
    let (mut decoder, format) = open_decoder(path, max_pixels, Strictness::Strict)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(CodecError::Decode("image has no pixels".into()));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let (width, height) = if swaps_axes(orientation) {
        (h, w)
    } else {
        (w, h)
    };
    Ok(Probe {
        format,
        width,
        height,
        color: decoder.color_type(),
        orientation,
    })
}

/// A decode that succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decoded {
    Clean,
    /// A damaged JPEG decoded as far as it goes ([`Strictness::Lenient`], `--allow-truncated`).
    Damaged(Damage),
}

/// Decodes `path` into `slot`, a `height x width x channels` u8 buffer, applying EXIF orientation
/// and converting the colour type. RGB8 into a 3-channel slot (and L8 into 1, LA8 into 2, RGBA8
/// into 4) goes straight from the codec into the slot; gray into a 3-channel slot is decoded into
/// the slot's tail and expanded in place; other cases go through one temporary image.
///
/// A truncated or corrupt JPEG is [`CodecError::Damaged`]; with [`Strictness::Lenient`] it is
/// decoded again without the checks (a second decode only for such files) and kept.
pub fn decode_into(
    path: &Path,
    slot: &mut [u8],
    (height, width, channels): (u32, u32, u32),
    max_pixels: u64,
    strictness: Strictness,
) -> Result<Decoded, CodecError> {
    let shape = (height, width, channels);
    match decode_once(path, slot, shape, max_pixels, Strictness::Strict) {
        Err(CodecError::Damaged(damage)) if strictness == Strictness::Lenient => {
            decode_once(path, slot, shape, max_pixels, Strictness::Lenient)?;
            Ok(Decoded::Damaged(damage))
        }
        decoded => decoded.map(|()| Decoded::Clean),
    }
}

fn decode_once(
    path: &Path,
    slot: &mut [u8],
    (height, width, channels): (u32, u32, u32),
    max_pixels: u64,
    strictness: Strictness,
) -> Result<(), CodecError> {
    use image::metadata::Orientation;
    let (mut decoder, _) = open_decoder(path, max_pixels, strictness)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (dw, dh) = decoder.dimensions();
    let (ow, oh) = if swaps_axes(orientation) {
        (dh, dw)
    } else {
        (dw, dh)
    };
    if (ow, oh) != (width, height) {
        return Err(CodecError::Changed {
            now_w: ow,
            now_h: oh,
            plan_w: width,
            plan_h: height,
        });
    }
    let pixels = width as usize * height as usize;
    let color = decoder.color_type();
    let native = matches!(
        (color, channels),
        (ColorType::Rgb8, 3) | (ColorType::L8, 1) | (ColorType::La8, 2) | (ColorType::Rgba8, 4)
    );
    if orientation == Orientation::NoTransforms && native {
        // The codec writes the slot directly. PNG panics on a wrong length: check first.
        if decoder.total_bytes() != slot.len() as u64 {
            return Err(CodecError::Decode(
                "decoder size does not match the slot".into(),
            ));
        }
        return decoder.read_image(slot).map_err(decode_err);
    }
    if orientation == Orientation::NoTransforms && color == ColorType::L8 && channels == 3 {
        let tail = 2 * pixels;
        decoder.read_image(&mut slot[tail..]).map_err(decode_err)?;
        // Forward expansion is safe: pixel i's gray byte sits at 2n + i >= 3i + 2 until it is read.
        for i in 0..pixels {
            let v = slot[tail + i];
            slot[3 * i..3 * i + 3].fill(v);
        }
        return Ok(());
    }
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    image.apply_orientation(orientation);
    match channels {
        1 => slot.copy_from_slice(image.to_luma8().as_raw()),
        2 => slot.copy_from_slice(image.to_luma_alpha8().as_raw()),
        3 => slot.copy_from_slice(image.to_rgb8().as_raw()),
        _ => slot.copy_from_slice(image.to_rgba8().as_raw()),
    }
    Ok(())
}

/// Decodes only the luma plane of a colour JPEG into `plane`, `height x width` bytes.
///
/// A colour JPEG stores Y = 0.299 R + 0.587 G + 0.114 B (JFIF), the Rec.601 weights `grayscale`
/// uses, so its Y plane is the grayscale image without the chroma: libjpeg-turbo asked for gray
/// output only entropy-decodes the chroma (no IDCT, no upsampling, no colour conversion). It
/// differs from `grayscale` of the decoded RGB only by that round trip's rounding, and by
/// clamping where the decoded RGB falls out of gamut.
///
/// An EXIF orientation is applied as on the general path: the plane is decoded upright into
/// `stored` (reused across calls), then turned into `plane`.
///
/// Returns false when the file is not a YCbCr JPEG that shows as `width x height`, or when
/// libjpeg-turbo warns or fails on it: the caller then takes the general path, whose decode by
/// the same library gives the same verdict and words it (or keeps the image, under
/// `--allow-truncated`).
pub fn decode_jpeg_luma(
    path: &Path,
    plane: &mut [u8],
    height: u32,
    width: u32,
    stored: &mut Vec<u8>,
) -> bool {
    use crate::jpeg::{Jpeg, Output, Stored};
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    if !data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return false;
    }
    let Ok(jpeg) = Jpeg::new(data) else {
        return false;
    };
    let orientation = jpeg.orientation();
    // The stored image is the shown one turned back: a quarter turn swaps its sides.
    let quarter_turn = swaps_axes(orientation);
    let (stored_w, stored_h) = if quarter_turn {
        (height, width)
    } else {
        (width, height)
    };
    if jpeg.stored() != Stored::YCbCr
        || jpeg.stored_size() != (stored_w, stored_h)
        || plane.len() != stored_w as usize * stored_h as usize
    {
        return false;
    }
    // A quarter turn reads from `stored` (reused across images) into `plane`; the rest turn the
    // plane in place.
    let target = if quarter_turn {
        stored.resize(plane.len(), 0);
        &mut stored[..]
    } else {
        &mut plane[..]
    };
    let clean = matches!(jpeg.decode(Output::Gray, 1, target), Ok(None));
    clean && turn_plane(orientation, (stored, stored_w, stored_h), plane, width).is_some()
}

/// Turns a decoded luma plane as `DynamicImage::apply_orientation` turns an image on the general
/// path, the same turns in the same order: a quarter turn from the upright `stored` plane into
/// `plane` (`width` wide), any other orientation in place.
fn turn_plane(
    orientation: image::metadata::Orientation,
    (stored, stored_w, stored_h): (&[u8], u32, u32),
    plane: &mut [u8],
    width: u32,
) -> Option<()> {
    use image::imageops::{self, flip_horizontal_in_place as flip_h};
    use image::metadata::Orientation as O;
    use image::{ImageBuffer, Luma};
    let height = (plane.len() / width.max(1) as usize) as u32;
    let mut shown = ImageBuffer::<Luma<u8>, _>::from_raw(width, height, plane)?;
    let upright = || ImageBuffer::<Luma<u8>, _>::from_raw(stored_w, stored_h, stored);
    match orientation {
        O::NoTransforms => {}
        O::Rotate90 => imageops::rotate90_in(&upright()?, &mut shown).ok()?,
        O::Rotate270 => imageops::rotate270_in(&upright()?, &mut shown).ok()?,
        O::Rotate90FlipH => {
            imageops::rotate90_in(&upright()?, &mut shown).ok()?;
            flip_h(&mut shown);
        }
        O::Rotate270FlipH => {
            imageops::rotate270_in(&upright()?, &mut shown).ok()?;
            flip_h(&mut shown);
        }
        O::Rotate180 => imageops::rotate180_in_place(&mut shown),
        O::FlipHorizontal => flip_h(&mut shown),
        O::FlipVertical => imageops::flip_vertical_in_place(&mut shown),
    }
    Some(())
}

/// A minimal EXIF chunk (little-endian TIFF, one IFD entry) holding only `Orientation = value`:
/// what tests and benchmarks attach to a JPEG to make it show turned.
pub fn exif_orientation(value: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes()); // IFD0 at offset 8
    t.extend_from_slice(&1u16.to_le_bytes()); // one entry
    t.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    t.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    t.extend_from_slice(&1u32.to_le_bytes()); // count
    t.extend_from_slice(&value.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    t
}

/// Output encoding settings.
#[derive(Clone, Copy, Debug)]
pub struct EncodeOptions {
    pub format: ImageFormat,
    /// JPEG and lossy WebP quality, 1-100.
    pub quality: u8,
    pub png: PngCompression,
    /// Flush the file's data to disk before renaming it into place, so that after a crash of
    /// the machine the name holds the whole image or nothing (never an empty file).
    pub durable: bool,
    /// WebP: lossless (VP8L) rather than lossy (VP8) at `quality`.
    pub webp_lossless: bool,
}

/// `--png-compression`: how hard the PNG encoder works. Every level is lossless; they trade
/// encoding time for file size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum PngCompression {
    /// Fast deflate with adaptive filters (the default).
    #[default]
    Fast = 0,
    /// The encoder's balanced default.
    Default = 1,
    /// Smallest files, slowest.
    Best = 2,
}

impl PngCompression {
    /// The level stored in the block under this code; an unknown code reads as `Fast`.
    pub fn from_u32(v: u32) -> PngCompression {
        match v {
            1 => PngCompression::Default,
            2 => PngCompression::Best,
            _ => PngCompression::Fast,
        }
    }

    /// Parses a `--png-compression` value: fast, default or best.
    pub fn parse(name: &str) -> Option<PngCompression> {
        match name {
            "fast" => Some(PngCompression::Fast),
            "default" => Some(PngCompression::Default),
            "best" => Some(PngCompression::Best),
            _ => None,
        }
    }

    fn compression_type(self) -> CompressionType {
        match self {
            PngCompression::Fast => CompressionType::Fast,
            PngCompression::Default => CompressionType::Default,
            PngCompression::Best => CompressionType::Best,
        }
    }
}

/// Parses a `--format` value.
pub fn parse_format(name: &str) -> Option<ImageFormat> {
    Some(match name.to_ascii_lowercase().as_str() {
        "png" => ImageFormat::Png,
        "jpeg" | "jpg" => ImageFormat::Jpeg,
        "webp" => ImageFormat::WebP,
        "gif" => ImageFormat::Gif,
        "bmp" => ImageFormat::Bmp,
        "tiff" | "tif" => ImageFormat::Tiff,
        _ => return None,
    })
}

/// The output path of `relative` under `out_root`: the same relative path, whose extension is
/// kept when it names the output's format (`.JPG` and `.jpeg` for JPEG, say) and replaced by the
/// format's own otherwise. So an output's extension always matches its content: PNG data named
/// `x.jpg` (kept as PNG) is written as `x.png`, and `--format png` writes `a.bmp` as `a.png`.
pub fn output_path(out_root: &Path, relative: &Path, output: ImageFormat) -> PathBuf {
    let target = out_root.join(relative);
    let named = target
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| {
            output
                .extensions_str()
                .iter()
                .any(|known| known.eq_ignore_ascii_case(e))
        });
    if named {
        target
    } else {
        target.with_extension(output.extensions_str()[0])
    }
}

/// JPEG through libjpeg-turbo ([`crate::jpeg::libjpeg`]), with its defaults: what its `cjpeg`
/// writes. Colour keeps its chroma whole (4:4:4) at quality 90 and above and halves it both ways
/// (4:2:0) below, as libvips, ImageMagick and jpeg-encoder do: at q90 4:2:0 costs 2.5 dB on
/// thumbnails. EXIF goes in APP1 and the ICC profile in APP2 segments after the JFIF header
/// ([`crate::metadata::jpeg_app_segments`]), comments in COM segments after them.
fn encode_jpeg(
    out: &mut impl Write,
    data: &[u8],
    width: u32,
    height: u32,
    color: ExtendedColorType,
    quality: u8,
    metadata: &Metadata,
) -> image::ImageResult<()> {
    if width > u16::MAX as u32 || height > u16::MAX as u32 {
        return Err(image::ImageError::Limits(
            image::error::LimitError::from_kind(image::error::LimitErrorKind::DimensionError),
        ));
    }
    let channels = if color == ExtendedColorType::L8 { 1 } else { 3 };
    let encoding = crate::jpeg::libjpeg::Encoding {
        quality: quality.clamp(1, 100),
        subsample: quality < 90,
    };
    let jpeg =
        crate::jpeg::libjpeg::compress(data, (width, height), channels, encoding).map_err(|e| {
            image::ImageError::Encoding(image::error::EncodingError::new(
                image::error::ImageFormatHint::Exact(ImageFormat::Jpeg),
                e.0,
            ))
        })?;
    let at = crate::metadata::jpeg_comment_offset(&jpeg);
    out.write_all(&jpeg[..at])?;
    out.write_all(&crate::metadata::jpeg_app_segments(metadata))?;
    out.write_all(&crate::metadata::jpeg_comment_segments(&metadata.comments))?;
    out.write_all(&jpeg[at..])?;
    Ok(())
}

/// The XXH3-64 hash of a file's bytes, read in 64 KiB pieces: what a kept dataset records of
/// each source at load, and what a rebuild compares before it decodes the source again.
pub fn source_hash(path: &Path) -> io::Result<u64> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut piece = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut piece) {
            Ok(0) => return Ok(hasher.digest()),
            Ok(n) => hasher.update(&piece[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A source file's size and modification time (ns since the epoch), as planning records them and
/// a rebuild compares them: (0, 0) when they cannot be read.
pub fn source_identity(path: &Path) -> (u64, u64) {
    std::fs::metadata(path).map_or((0, 0), |meta| {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        (meta.len(), mtime)
    })
}

/// What every temporary output's name holds, between the output's name and the run's block.
const TEMP_MARK: &[u8] = b".shmpipe-tmp-";

/// The name prefix of `target`'s temporary file in the run of block `run`,
/// `.NAME.shmpipe-tmp-BLOCK.`, built from the name's raw bytes (non-UTF-8 names included). The
/// block's name says whose it is: a run removes only its own, and anyone can tell whether the
/// run that left one is still alive ([`temporary_owner`]).
pub fn temp_prefix(target: &Path, run: &str) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(target.file_name().unwrap_or_default());
    prefix.push(std::ffi::OsStr::from_bytes(TEMP_MARK));
    prefix.push(run);
    prefix.push(".");
    prefix
}

/// The block name of the run a temporary output belongs to, from the file's name; None when it
/// is not a temporary output of this format.
pub fn temporary_owner(file_name: &std::ffi::OsStr) -> Option<&str> {
    let name = file_name.as_bytes();
    let at = name
        .windows(TEMP_MARK.len())
        .rposition(|w| w == TEMP_MARK)?;
    let rest = std::str::from_utf8(&name[at + TEMP_MARK.len()..]).ok()?;
    let (block, random) = rest.rsplit_once('.')?;
    (shmpipe_block::validate_name(block).is_ok() && !random.is_empty()).then_some(block)
}

/// Creates a temporary output with `create` and takes its writer's lock (`flock`, exclusive),
/// held for as long as the file stays open: through the writing and the rename, until the
/// writer closes it or dies. That lock is what tells a live writer's temporary from a left-over
/// one wherever its run's block lives ([`remove_temporary_unless_held`]); a sweep that took the
/// lock between the creation and ours has removed the file, and another is made.
pub fn held_temporary(
    mut create: impl FnMut() -> io::Result<tempfile::NamedTempFile>,
) -> io::Result<tempfile::NamedTempFile> {
    loop {
        let tmp = create()?;
        rustix::fs::flock(tmp.as_file(), rustix::fs::FlockOperation::LockExclusive)?;
        if rustix::fs::fstat(tmp.as_file())?.st_nlink > 0 {
            return Ok(tmp);
        }
    }
}

/// Removes the temporary output `path` unless its writer still holds it ([`held_temporary`]):
/// its lock is taken first, and the file is removed only while it is still the one at `path`.
/// Gives whether it was removed. What cannot be opened to be locked (not a regular file, say) is
/// removed as it is: no writer of ours holds such a file.
pub fn remove_temporary_unless_held(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let gone = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => Ok(false),
        _ => Err(e),
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let file = match opened {
        Ok(file) if file.metadata()?.is_file() => file,
        Ok(_) | Err(_) if std::fs::symlink_metadata(path).is_ok() => {
            return std::fs::remove_file(path).map(|()| true).or_else(gone)
        }
        Ok(_) => return Ok(false),
        Err(e) => return gone(e),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // Renamed into place meanwhile (the name is then another file's, or none).
    let (locked, named) = match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(locked), Ok(named)) => (locked, named),
        (Err(e), _) | (_, Err(e)) => return gone(e),
    };
    if (locked.dev(), locked.ino()) != (named.dev(), named.ino()) {
        return Ok(false);
    }
    // Our lock is held across the unlink: no writer can have taken the file meanwhile.
    std::fs::remove_file(path).map(|()| true).or_else(gone)
}

/// Every temporary output under `root` (symbolic links not followed), with the block name of
/// the run it belongs to.
pub fn temporaries(root: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                folders.push(entry.path());
            } else if let Some(block) = temporary_owner(&entry.file_name()) {
                found.push((entry.path(), block.to_string()));
            }
        }
    }
    found.sort();
    found
}

/// Flushes to disk the folders that hold `targets` (files under `root`), every folder between
/// them and `root`, and `root`: after a crash of the machine the renames that put the outputs in
/// place, and the folders created for them, are there. Gives the folders that could not be
/// flushed, with the reason. The folders above `root` (which `-o a/b/c` may have created, and
/// whose last gained `root`'s entry) are flushed too, as far as they may be opened.
pub fn sync_folders<'p>(
    root: &Path,
    targets: impl IntoIterator<Item = &'p Path>,
) -> Vec<(PathBuf, io::Error)> {
    let mut folders = std::collections::BTreeSet::new();
    for target in targets {
        for folder in target.ancestors().skip(1) {
            if !folder.starts_with(root) || folder == root || !folders.insert(folder.to_path_buf())
            {
                break;
            }
        }
    }
    folders.insert(root.to_path_buf());
    let failed = folders
        .into_iter()
        .filter_map(|folder| sync_folder(&folder).err().map(|e| (folder, e)))
        .collect();
    for folder in root.ancestors().skip(1) {
        // Best effort: a folder above the output root may not be ours to open.
        let _ = sync_folder(folder);
    }
    failed
}

/// `fsync` of one folder ("" is the current one). A filesystem that cannot flush a folder
/// (EINVAL or ENOTSUP: CIFS, some FUSE) has nothing to flush: that is not an error.
fn sync_folder(folder: &Path) -> io::Result<()> {
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    match File::open(folder).and_then(|f| f.sync_all()) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        done => done,
    }
}

/// The OS's reason alone: tempfile's errors wrap it with the temporary file's path, which would
/// crowd the output's own path out of a failure's 120 bytes.
fn os_reason(e: io::Error) -> io::Error {
    if let Some(code) = e.raw_os_error() {
        return io::Error::from_raw_os_error(code);
    }
    // tempfile's own wrapper hides the code: keep its message up to the path it appends.
    let message = e.to_string();
    match message.split_once(" at path ") {
        Some((reason, _)) => io::Error::new(e.kind(), reason.to_string()),
        None => e,
    }
}

/// PNG through `image`'s encoder, which writes the ICC profile (iCCP) and EXIF (eXIf); comments
/// go in text chunks after the header.
fn encode_png(
    out: &mut impl Write,
    data: &[u8],
    (width, height): (u32, u32),
    color: ExtendedColorType,
    compression: PngCompression,
    metadata: &Metadata,
) -> image::ImageResult<()> {
    fn encoder<W: Write>(
        out: W,
        compression: PngCompression,
        metadata: &Metadata,
    ) -> PngEncoder<W> {
        let mut encoder =
            PngEncoder::new_with_quality(out, compression.compression_type(), FilterType::Adaptive);
        carry_metadata(&mut encoder, metadata);
        encoder
    }
    if metadata.comments.is_empty() {
        return encoder(out, compression, metadata).write_image(data, width, height, color);
    }
    let mut png = Vec::new();
    encoder(&mut png, compression, metadata).write_image(data, width, height, color)?;
    let at = crate::metadata::PNG_TEXT_OFFSET.min(png.len());
    out.write_all(&png[..at])?;
    out.write_all(&crate::metadata::png_text_chunks(&metadata.comments))?;
    out.write_all(&png[at..])?;
    Ok(())
}

/// libwebp's effort (0 fastest to 6), its default. On a 1920x1080 photo at q90 it takes 128 ms;
/// method 2 takes 49 ms for a file 2 to 8% larger (enough to take a re-encoded q75 photo past
/// 1.5 times its size), method 0 35 ms and 17% larger. `image`'s lossless encoder takes 17 ms
/// for a file 11 times as large (`cargo bench -p shmpipe-benches --bench codecs`).
const WEBP_METHOD: i32 = 4;

/// Lossy WebP (VP8, alpha in a lossless ALPH chunk) through libwebp at [`WEBP_METHOD`]. libwebp
/// takes RGB(A): gray is expanded. The ICC profile and EXIF go in chunks of an extended
/// container ([`crate::metadata::webp_with_metadata`]).
fn encode_webp_lossy(
    out: &mut impl Write,
    data: &[u8],
    (width, height): (u32, u32),
    color: ExtendedColorType,
    quality: u8,
    metadata: &Metadata,
) -> image::ImageResult<()> {
    let expanded;
    let (pixels, layout) = match color {
        ExtendedColorType::L8 => {
            expanded = data.iter().flat_map(|&v| [v, v, v]).collect::<Vec<u8>>();
            (&expanded[..], webp::PixelLayout::Rgb)
        }
        ExtendedColorType::La8 => {
            expanded = data
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0], p[1]])
                .collect::<Vec<u8>>();
            (&expanded[..], webp::PixelLayout::Rgba)
        }
        ExtendedColorType::Rgba8 => (data, webp::PixelLayout::Rgba),
        _ => (data, webp::PixelLayout::Rgb),
    };
    let encoding_error = |what: String| {
        image::ImageError::Encoding(image::error::EncodingError::new(
            image::error::ImageFormatHint::Exact(ImageFormat::WebP),
            what,
        ))
    };
    let mut config =
        webp::WebPConfig::new().map_err(|()| encoding_error("libwebp: no config".into()))?;
    config.lossless = 0;
    config.quality = quality as f32;
    config.alpha_compression = 1;
    config.method = WEBP_METHOD;
    let encoded = webp::Encoder::new(pixels, layout, width, height)
        .encode_advanced(&config)
        .map_err(|e| encoding_error(format!("libwebp: {e:?}")))?;
    if metadata.icc.is_none() && metadata.exif.is_none() {
        out.write_all(&encoded)?;
    } else {
        let with = crate::metadata::webp_with_metadata(&encoded, (width, height), metadata);
        out.write_all(&with)?;
    }
    Ok(())
}

/// Hands the ICC profile and EXIF to an encoder of `image`, as far as its format holds them.
fn carry_metadata(encoder: &mut impl ImageEncoder, metadata: &Metadata) {
    if let Some(icc) = &metadata.icc {
        let _ = encoder.set_icc_profile(icc.clone());
    }
    if let Some(exif) = &metadata.exif {
        let _ = encoder.set_exif_metadata(exif.clone());
    }
}

/// Whether outputs in `format` can hold any of a source's metadata (see [`encode_with`]).
pub fn holds_metadata(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Tiff
    )
}

/// Encodes a `height x width x channels` slot to `target`: into a temporary file beside it, then
/// a rename, so `target` is either absent (or as it was) or complete, and with
/// [`EncodeOptions::durable`] stays so across a crash of the machine. The temporary file's name
/// carries `run`, the block name of the run writing it ([`temp_prefix`]). Returns the bytes
/// written.
pub fn encode_to(
    slot: &[u8],
    shape: (u32, u32, u32),
    opts: EncodeOptions,
    target: &Path,
    run: &str,
) -> Result<u64, CodecError> {
    encode_with(slot, shape, opts, &Metadata::default(), target, run)
}

/// [`encode_to`], carrying `metadata` into the output as far as its format holds it: ICC
/// profile in JPEG, PNG, WebP and TIFF; EXIF in JPEG, PNG and WebP; comments in JPEG and PNG.
pub fn encode_with(
    slot: &[u8],
    (height, width, channels): (u32, u32, u32),
    opts: EncodeOptions,
    metadata: &Metadata,
    target: &Path,
    run: &str,
) -> Result<u64, CodecError> {
    let write_err = |source: io::Error| CodecError::Write {
        path: target.to_path_buf(),
        source: os_reason(source),
    };
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let mut tmp = held_temporary(|| {
        tempfile::Builder::new()
            .prefix(&temp_prefix(target, run))
            // An ordinary file's mode (0666 less the umask), not the temporary file's 0600.
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
    })
    .map_err(write_err)?;
    // Written through the File itself, whose errors are the OS's reason alone (the temporary
    // file's own Write adds its path to each).
    let mut out = BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
    let converted;
    let (data, color) = match (channels, opts.format) {
        (1, ImageFormat::Gif) => {
            // The GIF encoder takes only RGB(A).
            converted = slot.iter().flat_map(|&v| [v, v, v]).collect::<Vec<u8>>();
            (&converted[..], ExtendedColorType::Rgb8)
        }
        (1, _) => (slot, ExtendedColorType::L8),
        (2, ImageFormat::Jpeg) => {
            // JPEG has no alpha: drop it.
            converted = slot.chunks_exact(2).map(|p| p[0]).collect::<Vec<u8>>();
            (&converted[..], ExtendedColorType::L8)
        }
        (2, ImageFormat::Gif | ImageFormat::Tiff) => {
            // Neither encoder takes gray with alpha.
            converted = slot
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0], p[1]])
                .collect::<Vec<u8>>();
            (&converted[..], ExtendedColorType::Rgba8)
        }
        (2, _) => (slot, ExtendedColorType::La8),
        (4, ImageFormat::Jpeg) => {
            // JPEG has no alpha: drop it.
            converted = slot
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect::<Vec<u8>>();
            (&converted[..], ExtendedColorType::Rgb8)
        }
        (4, _) => (slot, ExtendedColorType::Rgba8),
        _ => (slot, ExtendedColorType::Rgb8),
    };
    let gray = matches!(color, ExtendedColorType::L8 | ExtendedColorType::La8);
    let fitted;
    let metadata = match &metadata.icc {
        Some(icc) if !crate::metadata::icc_fits(icc, gray) => {
            fitted = Metadata {
                icc: None,
                ..metadata.clone()
            };
            &fitted
        }
        _ => metadata,
    };
    let encoded = match opts.format {
        ImageFormat::Jpeg => {
            encode_jpeg(&mut out, data, width, height, color, opts.quality, metadata)
        }
        ImageFormat::Png => encode_png(&mut out, data, (width, height), color, opts.png, metadata),
        ImageFormat::WebP if !opts.webp_lossless => encode_webp_lossy(
            &mut out,
            data,
            (width, height),
            color,
            opts.quality,
            metadata,
        ),
        ImageFormat::WebP => {
            let mut encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            carry_metadata(&mut encoder, metadata);
            encoder.write_image(data, width, height, color)
        }
        ImageFormat::Tiff => {
            // TIFF needs Seek: encode in memory, then write.
            let mut buffer = io::Cursor::new(Vec::new());
            let mut encoder = image::codecs::tiff::TiffEncoder::new(&mut buffer);
            if let Some(icc) = &metadata.icc {
                let _ = encoder.set_icc_profile(icc.clone());
            }
            encoder
                .write_image(data, width, height, color)
                .and_then(|_| {
                    out.write_all(buffer.get_ref())
                        .map_err(image::ImageError::IoError)
                })
        }
        other => {
            let mut buffer = io::Cursor::new(Vec::new());
            image::write_buffer_with_format(&mut buffer, data, width, height, color, other)
                .and_then(|_| {
                    out.write_all(buffer.get_ref())
                        .map_err(image::ImageError::IoError)
                })
        }
    };
    encoded.map_err(|e| match e {
        image::ImageError::IoError(io) => write_err(io),
        e => CodecError::Encode {
            path: target.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    out.into_inner().map_err(|e| write_err(e.into_error()))?;
    let bytes = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    if opts.durable {
        tmp.as_file().sync_data().map_err(write_err)?;
    }
    tmp.persist(target).map_err(|e| write_err(e.error))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errors_keep_the_os_reason_without_the_temporary_path() {
        let wrapped = tempfile::Builder::new()
            .tempfile_in("/nonexistent-shmpipe-folder")
            .unwrap_err();
        assert!(wrapped.to_string().contains("nonexistent"), "{wrapped}");
        let plain = os_reason(wrapped);
        assert_eq!(plain.kind(), io::ErrorKind::NotFound);
        assert_eq!(plain.to_string(), "No such file or directory (os error 2)");
    }

    /// A profile too large for one APP2 segment goes in numbered chunks, EXIF in APP1, and a
    /// decoder puts both back together byte for byte from the written file.
    #[test]
    fn a_jpeg_output_carries_a_profile_of_three_segments_and_its_exif() {
        use image::ImageDecoder;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jpg");
        let mut icc: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
        icc[16..20].copy_from_slice(b"RGB ");
        let exif = b"MM\0\x2a\0\0\0\x08\0\0".to_vec();
        let metadata = Metadata {
            icc: Some(icc.clone()),
            exif: Some(exif.clone()),
            comments: Vec::new(),
            dropped: Vec::new(),
        };
        let (h, w) = (24u32, 40u32);
        let slot: Vec<u8> = (0..h * w * 3).map(|i| (i % 256) as u8).collect();
        let opts = EncodeOptions {
            format: ImageFormat::Jpeg,
            quality: 90,
            png: PngCompression::default(),
            durable: false,
            webp_lossless: false,
        };
        encode_with(&slot, (h, w, 3), opts, &metadata, &target, "shmpipe-1-test").unwrap();
        let bytes = std::fs::read(&target).unwrap();
        let app2 = bytes.windows(14).filter(|s| s[..2] == [0xFF, 0xE2]).count();
        assert_eq!(app2, 3, "one APP2 segment per 65519 bytes of profile");
        let mut decoder =
            image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(decoder.icc_profile().unwrap(), Some(icc));
        assert_eq!(decoder.exif_metadata().unwrap(), Some(exif));
        assert_eq!(decoder.dimensions(), (w, h));
    }

    /// Colour keeps its whole chroma at quality 90 and above (4:4:4: every component sampled
    /// 1x1), as libvips and ImageMagick write it, and halves it below (4:2:0: luma 2x2).
    #[test]
    fn a_colour_jpeg_keeps_whole_chroma_from_quality_90() {
        let dir = tempfile::tempdir().unwrap();
        let (h, w) = (32u32, 48u32);
        let slot: Vec<u8> = (0..h * w * 3).map(|i| (i * 31 % 256) as u8).collect();
        for (quality, luma_sampling) in [(100, 0x11), (90, 0x11), (89, 0x22), (50, 0x22)] {
            let target = dir.path().join(format!("q{quality}.jpg"));
            let opts = EncodeOptions {
                format: ImageFormat::Jpeg,
                quality,
                png: PngCompression::default(),
                durable: false,
                webp_lossless: false,
            };
            encode_to(&slot, (h, w, 3), opts, &target, "shmpipe-1-test").unwrap();
            let bytes = std::fs::read(&target).unwrap();
            let sof = bytes.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
            // SOF0: length (2), precision, height (2), width (2), count, then per component
            // its id and sampling factors.
            assert_eq!(bytes[sof + 9], 3, "q{quality}: three components");
            assert_eq!(bytes[sof + 11], luma_sampling, "q{quality}: luma sampling");
            assert_eq!(bytes[sof + 14], 0x11, "q{quality}: Cb sampling");
        }
    }

    /// A temporary output's name says which run's it is, whatever the output's own name holds
    /// (dots, the mark itself, bytes that are not UTF-8).
    #[test]
    fn a_temporary_output_names_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let run = "shmpipe-4242-0badcafe";
        for name in [&b"a.jpg"[..], b"x.shmpipe-tmp-y.png", b"caf\xe9.png"] {
            let target = dir.path().join(std::ffi::OsStr::from_bytes(name));
            let tmp = tempfile::Builder::new()
                .prefix(&temp_prefix(&target, run))
                .tempfile_in(dir.path())
                .unwrap();
            let file_name = tmp.path().file_name().unwrap().to_owned();
            assert_eq!(temporary_owner(&file_name), Some(run), "{file_name:?}");
            assert_eq!(temporaries(dir.path()).len(), 1);
        }
        assert_eq!(temporary_owner(std::ffi::OsStr::new("a.jpg")), None);
        // The format before the run's name was added: no owner to check, left alone.
        assert_eq!(
            temporary_owner(std::ffi::OsStr::new(".a.jpg.shmpipe-tmp-Ab12Cd")),
            None
        );
    }

    /// Every EXIF orientation takes the luma path (true), and the plane shows the image as the
    /// general path does: the grayscale of its decoded, turned RGB, up to the round trip's
    /// rounding.
    #[test]
    fn luma_plane_is_read_and_turned_for_every_orientation() {
        let (w, h) = (45u32, 29u32);
        let rgb: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x * 5) as u8, (y * 8) as u8, 90]))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut stored = Vec::new();
        for orientation in 1..=8u16 {
            let path = dir.path().join(format!("o{orientation}.jpg"));
            let mut bytes = Vec::new();
            let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 98);
            encoder
                .add_exif_metadata(&exif_orientation(orientation))
                .unwrap();
            encoder
                .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
                .unwrap();
            std::fs::write(&path, bytes).unwrap();
            let (sw, sh) = if orientation >= 5 { (h, w) } else { (w, h) };
            let mut general = vec![0u8; (sw * sh * 3) as usize];
            let decoded = decode_into(
                &path,
                &mut general,
                (sh, sw, 3),
                DEFAULT_MAX_PIXELS,
                Strictness::Strict,
            );
            assert_eq!(decoded.unwrap(), Decoded::Clean);
            let mut plane = vec![0u8; (sw * sh) as usize];
            assert!(
                decode_jpeg_luma(&path, &mut plane, sh, sw, &mut stored),
                "orientation {orientation} takes the luma path"
            );
            for (i, (p, &l)) in general.chunks_exact(3).zip(&plane).enumerate() {
                let luma = (299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000;
                assert!(
                    (luma as i32 - l as i32).abs() <= 3,
                    "orientation {orientation}, pixel {i}: {l} against {luma}"
                );
            }
        }
    }
}
