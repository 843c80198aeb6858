//! Writing images: a slot encoded as JPEG (libjpeg-turbo), PNG, lossy WebP (libwebp) or any
//! other format `image` writes, with the source's metadata where the format holds it, through
//! a temporary file and a rename (see `files`).

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use crate::metadata::Metadata;
use image::{ExtendedColorType, ImageEncoder, ImageFormat};

use super::*;

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
    /// `--background`: an image with alpha is flattened onto this colour and written without
    /// alpha, whatever the format. None: alpha is kept where the format holds it, and dropped
    /// from a JPEG (see [`drops_transparency`]).
    pub background: Option<[u8; 3]>,
}

/// The warning of an image whose transparency a JPEG output dropped: the colours under its
/// transparent pixels show. Its reason starts with this.
pub const TRANSPARENCY_DROPPED: &str = "its transparency was dropped (a JPEG holds none)";

/// Whether encoding `pixels` (`channels` interleaved) with `opts` drops transparency that shows:
/// a JPEG, with no `background` to flatten onto, of an image with a pixel not wholly opaque.
pub fn drops_transparency(pixels: &[u8], channels: usize, opts: &EncodeOptions) -> bool {
    opts.format == ImageFormat::Jpeg
        && opts.background.is_none()
        && matches!(channels, 2 | 4)
        && pixels
            .chunks_exact(channels)
            .any(|p| p[channels - 1] != 255)
}

/// `pixels` (gray and alpha, or RGBA) composited over `background`: each channel
/// `(v * a + b * (255 - a) + 127) / 255`, rounded to nearest. Gray over a gray background stays
/// gray (1 channel); over any other colour it becomes RGB. Gives the pixels and their channels.
pub fn flatten(pixels: &[u8], channels: usize, background: [u8; 3]) -> (Vec<u8>, usize) {
    let over = |v: u8, a: u8, b: u8| {
        let (v, a, b) = (u32::from(v), u32::from(a), u32::from(b));
        ((v * a + b * (255 - a) + 127) / 255) as u8
    };
    let [r, g, b] = background;
    match channels {
        2 if r == g && g == b => (
            pixels
                .chunks_exact(2)
                .map(|p| over(p[0], p[1], r))
                .collect(),
            1,
        ),
        2 => (
            pixels
                .chunks_exact(2)
                .flat_map(|p| {
                    [
                        over(p[0], p[1], r),
                        over(p[0], p[1], g),
                        over(p[0], p[1], b),
                    ]
                })
                .collect(),
            3,
        ),
        4 => (
            pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    [
                        over(p[0], p[3], r),
                        over(p[1], p[3], g),
                        over(p[2], p[3], b),
                    ]
                })
                .collect(),
            3,
        ),
        _ => (pixels.to_vec(), channels),
    }
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
            .permissions(ordinary_mode())
            .tempfile_in(dir)
    })
    .map_err(write_err)?;
    // Written through the File itself, whose errors are the OS's reason alone (the temporary
    // file's own Write adds its path to each).
    let mut out = BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
    let (data, color) = encoder_input(slot, channels, opts);
    let data = &data[..];
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
    let encoded = encode_into(&mut out, data, (width, height), color, opts, metadata);
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

/// The pixels and colour type an encoder is given for a slot of `channels` in `opts.format`:
/// flattened onto `opts.background` when it is set and the image has alpha; gray expanded to
/// RGB for GIF; gray with alpha as RGBA for GIF and TIFF (neither encoder takes it); alpha
/// dropped for JPEG (it holds none). Borrowed when the slot is fit as it is.
fn encoder_input(
    slot: &[u8],
    channels: u32,
    opts: EncodeOptions,
) -> (Cow<'_, [u8]>, ExtendedColorType) {
    match opts.background {
        Some(background) if matches!(channels, 2 | 4) => {
            let (pixels, channels) = flatten(slot, channels as usize, background);
            let (data, color) = converted(&pixels, channels as u32, opts.format);
            // Flattened pixels are gray or RGB, which every encoder takes as they are.
            let data = match data {
                Cow::Borrowed(_) => None,
                Cow::Owned(data) => Some(data),
            };
            (Cow::Owned(data.unwrap_or(pixels)), color)
        }
        _ => converted(slot, channels, opts.format),
    }
}

/// `slot`'s pixels as `format`'s encoder takes them (see [`encoder_input`]).
fn converted(
    slot: &[u8],
    channels: u32,
    format: ImageFormat,
) -> (Cow<'_, [u8]>, ExtendedColorType) {
    match (channels, format) {
        (1, ImageFormat::Gif) => {
            // The GIF encoder takes only RGB(A).
            let rgb = slot.iter().flat_map(|&v| [v, v, v]).collect();
            (Cow::Owned(rgb), ExtendedColorType::Rgb8)
        }
        (1, _) => (Cow::Borrowed(slot), ExtendedColorType::L8),
        (2, ImageFormat::Jpeg) => {
            // JPEG has no alpha: drop it.
            let gray = slot.chunks_exact(2).map(|p| p[0]).collect();
            (Cow::Owned(gray), ExtendedColorType::L8)
        }
        (2, ImageFormat::Gif | ImageFormat::Tiff) => {
            // Neither encoder takes gray with alpha.
            let rgba = slot
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0], p[1]])
                .collect();
            (Cow::Owned(rgba), ExtendedColorType::Rgba8)
        }
        (2, _) => (Cow::Borrowed(slot), ExtendedColorType::La8),
        (4, ImageFormat::Jpeg) => {
            // JPEG has no alpha: drop it.
            let rgb = slot
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            (Cow::Owned(rgb), ExtendedColorType::Rgb8)
        }
        (4, _) => (Cow::Borrowed(slot), ExtendedColorType::Rgba8),
        _ => (Cow::Borrowed(slot), ExtendedColorType::Rgb8),
    }
}

/// `data` encoded as `opts.format` into `out`, with what of `metadata` the format holds.
fn encode_into(
    out: &mut impl Write,
    data: &[u8],
    (width, height): (u32, u32),
    color: ExtendedColorType,
    opts: EncodeOptions,
    metadata: &Metadata,
) -> image::ImageResult<()> {
    match opts.format {
        ImageFormat::Jpeg => encode_jpeg(out, data, width, height, color, opts.quality, metadata),
        ImageFormat::Png => encode_png(out, data, (width, height), color, opts.png, metadata),
        ImageFormat::WebP if !opts.webp_lossless => {
            encode_webp_lossy(out, data, (width, height), color, opts.quality, metadata)
        }
        ImageFormat::WebP => {
            let mut encoder = image::codecs::webp::WebPEncoder::new_lossless(out);
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
    }
}
