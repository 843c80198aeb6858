//! Reading images: a file's header for planning ([`probe`]), and decoding it straight into its
//! slot ([`decode_into`]), EXIF orientation applied, so the slot holds what a viewer shows. What
//! a file is comes from its magic bytes, never from its name. The JPEG luma plane for gray
//! outputs goes through libjpeg-turbo ([`decode_jpeg_luma`]).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::jpeg::{Damage, Strictness};
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::*;

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
