//! JPEG through libjpeg-turbo, whose verdict on a file is the project's.
//!
//! Every JPEG path (RGB, the luma plane of a grayscale-first chain, shrink-on-load at 1/2, 1/4
//! or 1/8) decodes with the same library ([`libjpeg`]), so they cannot disagree on a file: any
//! warning libjpeg-turbo emits on the way ("Corrupt JPEG data: bad Huffman code", "premature end
//! of data segment", "N extraneous bytes before marker", "Premature end of JPEG file") means the
//! pixels are not the file's, and the file is [`Damage`]d. No end marker, a restart marker out
//! of place, data that desynchronises the Huffman decoder: all are warnings there. A file that
//! decodes with no warning is good, whatever follows its end marker (a multi-picture file,
//! MPO/MPF, decodes to its first picture, as libjpeg-turbo and Pillow read it).
//!
//! [`Strictness::Lenient`] keeps a damaged file's pixels as far as libjpeg-turbo decoded them,
//! for `--allow-truncated`.

#[allow(unsafe_code)]
pub mod libjpeg;

use std::path::Path;

use image::error::{DecodingError, ImageFormatHint, LimitError, LimitErrorKind};
use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageResult, Limits};

pub use libjpeg::{Output, Stored};

/// What a damaged JPEG gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strictness {
    /// An error naming the damage (the default).
    #[default]
    Strict,
    /// The pixels libjpeg-turbo still decodes from the file (`--allow-truncated`).
    Lenient,
}

/// Why a JPEG's pixels cannot be trusted: the first warning libjpeg-turbo emitted on it. Its
/// text is the image's failure reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("truncated JPEG: data ends before the last row")]
    Truncated,
    #[error("corrupt JPEG data: {0}")]
    Corrupt(String),
}

impl Damage {
    fn of(warning: &libjpeg::Warning) -> Damage {
        if warning.is_truncation() {
            return Damage::Truncated;
        }
        let text = warning.text.trim();
        let text = text.strip_prefix("Corrupt JPEG data: ").unwrap_or(text);
        let mut chars = text.chars();
        let text = match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => String::new(),
        };
        Damage::Corrupt(text)
    }

    /// The damage behind a decoding error from [`JpegDecoder`], if that is what it was.
    pub fn from_image_error(err: &ImageError) -> Option<&Damage> {
        match err {
            ImageError::Decoding(d) => std::error::Error::source(d)?.downcast_ref::<Damage>(),
            _ => None,
        }
    }
}

/// Why a JPEG could not be decoded at all: libjpeg-turbo's fatal error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Undecodable(String);

impl Undecodable {
    fn of(fatal: libjpeg::Fatal, before: Option<&libjpeg::Warning>) -> Undecodable {
        let text = fatal.0;
        Undecodable(match before {
            Some(w) if w.is_truncation() => format!("truncated JPEG: {text}"),
            _ => format!("cannot decode JPEG: {text}"),
        })
    }
}

/// A JPEG file with its header read: the start of every JPEG decode.
pub struct Jpeg {
    decompressor: libjpeg::Decompressor,
    orientation: Orientation,
    exif: Option<Vec<u8>>,
}

impl Jpeg {
    /// Reads the header of the JPEG in `data`.
    pub fn new(data: Vec<u8>) -> Result<Jpeg, Undecodable> {
        let decompressor =
            libjpeg::Decompressor::new(data).map_err(|f| Undecodable::of(f, None))?;
        let exif = decompressor
            .header()
            .segments
            .iter()
            .find_map(|(marker, payload)| {
                (*marker == 0xE1).then_some(payload.strip_prefix(b"Exif\0\0")?)
            })
            .map(<[u8]>::to_vec);
        let orientation = exif
            .as_deref()
            .and_then(Orientation::from_exif_chunk)
            .unwrap_or(Orientation::NoTransforms);
        Ok(Jpeg {
            decompressor,
            orientation,
            exif,
        })
    }

    /// Reads the file at `path` and its header.
    pub fn open(path: &Path) -> ImageResult<Jpeg> {
        let data = std::fs::read(path)?;
        Jpeg::new(data).map_err(decoding)
    }

    /// `(width, height)` as stored, before the EXIF orientation.
    pub fn stored_size(&self) -> (u32, u32) {
        let header = self.decompressor.header();
        (header.width, header.height)
    }

    pub fn stored(&self) -> Stored {
        self.decompressor.header().stored
    }

    pub fn orientation(&self) -> Orientation {
        self.orientation
    }

    /// The `(width, height)` of a decode at 1/`denom` (before the EXIF orientation).
    pub fn scaled_size(&mut self, output: Output, denom: u32) -> Result<(u32, u32), Undecodable> {
        self.decompressor
            .output_size(output, denom)
            .map_err(|f| Undecodable::of(f, None))
    }

    /// Decodes the image as `output` at 1/`denom` of its size into `out` (exactly the size
    /// [`Jpeg::scaled_size`] gives), upright as stored. `Ok(Some(damage))` when libjpeg-turbo
    /// warned: `out` then holds what it decoded, which is not the file's picture.
    pub fn decode(
        self,
        output: Output,
        denom: u32,
        out: &mut [u8],
    ) -> Result<Option<Damage>, Undecodable> {
        let warned = |d: &libjpeg::Decompressor| d.warning().cloned();
        let header_warning = warned(&self.decompressor);
        match self.decompressor.decode(output, denom, out) {
            Ok(done) => Ok(done.warning().map(Damage::of)),
            Err(fatal) => Err(Undecodable::of(fatal, header_warning.as_ref())),
        }
    }
}

fn decoding(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ImageError {
    ImageError::Decoding(DecodingError::new(
        ImageFormatHint::Exact(ImageFormat::Jpeg),
        err,
    ))
}

/// Converts inverted CMYK (as Adobe writes it, and libjpeg gives it) to RGB: each colour times
/// the black, as Pillow and ImageMagick convert such files.
fn cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8]) {
    for (px, out) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let k = px[3] as u32;
        for c in 0..3 {
            out[c] = ((px[c] as u32 * k + 127) / 255) as u8;
        }
    }
}

/// An [`ImageDecoder`] over [`Jpeg`]: luma files as L8, everything else as RGB8 (CMYK and YCCK
/// converted), with the EXIF orientation reported for the caller to apply.
pub struct JpegDecoder {
    jpeg: Jpeg,
    strictness: Strictness,
    color: ColorType,
}

impl JpegDecoder {
    /// Reads the file at `path` and its header.
    pub fn open(path: &Path, strictness: Strictness) -> ImageResult<JpegDecoder> {
        let jpeg = Jpeg::open(path)?;
        let color = match jpeg.stored() {
            Stored::Gray => ColorType::L8,
            Stored::YCbCr | Stored::Rgb | Stored::Cmyk | Stored::Ycck => ColorType::Rgb8,
            Stored::Other => return Err(decoding("JPEG in an unknown colour space")),
        };
        Ok(JpegDecoder {
            jpeg,
            strictness,
            color,
        })
    }
}

impl ImageDecoder for JpegDecoder {
    fn dimensions(&self) -> (u32, u32) {
        self.jpeg.stored_size()
    }

    fn color_type(&self) -> ColorType {
        self.color
    }

    /// None: a source's profile is read by [`crate::metadata`], the one reader of what outputs
    /// carry.
    fn icc_profile(&mut self) -> ImageResult<Option<Vec<u8>>> {
        Ok(None)
    }

    fn exif_metadata(&mut self) -> ImageResult<Option<Vec<u8>>> {
        Ok(self.jpeg.exif.clone())
    }

    fn orientation(&mut self) -> ImageResult<Orientation> {
        Ok(self.jpeg.orientation)
    }

    fn set_limits(&mut self, limits: Limits) -> ImageResult<()> {
        limits.check_support(&image::LimitSupport::default())?;
        let (width, height) = self.dimensions();
        limits.check_dimensions(width, height)
    }

    fn read_image(self, buf: &mut [u8]) -> ImageResult<()> {
        if buf.len() as u64 != self.total_bytes() {
            return Err(decoding(format!(
                "buffer of {} bytes for an image of {} bytes",
                buf.len(),
                self.total_bytes()
            )));
        }
        let cmyk = matches!(self.jpeg.stored(), Stored::Cmyk | Stored::Ycck);
        let verdict = match (self.color, cmyk) {
            (ColorType::L8, _) => self.jpeg.decode(Output::Gray, 1, buf),
            (_, false) => self.jpeg.decode(Output::Rgb, 1, buf),
            (_, true) => {
                let mut samples = Vec::new();
                samples.try_reserve_exact(buf.len() / 3 * 4).map_err(|_| {
                    ImageError::Limits(LimitError::from_kind(LimitErrorKind::InsufficientMemory))
                })?;
                samples.resize(buf.len() / 3 * 4, 0);
                let verdict = self.jpeg.decode(Output::Cmyk, 1, &mut samples);
                cmyk_to_rgb(&samples, buf);
                verdict
            }
        };
        match verdict.map_err(decoding)? {
            Some(damage) if self.strictness == Strictness::Strict => Err(decoding(damage)),
            _ => Ok(()),
        }
    }

    fn read_image_boxed(self: Box<Self>, buf: &mut [u8]) -> ImageResult<()> {
        (*self).read_image(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A noisy 256 x 192 RGB JPEG: enough entropy-coded data to cut and corrupt.
    fn photo() -> Vec<u8> {
        let (w, h) = (256u16, 192u16);
        let mut state = 0x2545_f491u32;
        let rgb: Vec<u8> = (0..w as u32 * h as u32 * 3)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                ((i / 3 % w as u32) as u8).wrapping_add((state & 63) as u8)
            })
            .collect();
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 90)
            .encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        bytes
    }

    fn decode(bytes: &[u8], strictness: Strictness) -> ImageResult<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jpg");
        std::fs::write(&path, bytes).unwrap();
        let decoder = JpegDecoder::open(&path, strictness)?;
        let mut out = vec![0u8; decoder.total_bytes() as usize];
        decoder.read_image(&mut out)?;
        Ok(out)
    }

    /// Good files of every kind (sequential, progressive, with restart markers, gray, subsampled
    /// or not) decode with no damage, to pixels within rounding of another decoder's (`image`'s
    /// zune-jpeg: IDCT and upsampling differ in their last bit).
    #[test]
    fn whole_files_decode_clean_and_close_to_another_decoder() {
        let (w, h) = (203u16, 141u16);
        let rgb: Vec<u8> = (0..w as u32 * h as u32)
            .flat_map(|i| [(i % 251) as u8, (i / 7 % 253) as u8, (i * 13 % 255) as u8])
            .collect();
        let gray: Vec<u8> = rgb.iter().step_by(3).copied().collect();
        for variant in 0..5 {
            let mut bytes = Vec::new();
            let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 85);
            match variant {
                1 => encoder.set_progressive(true),
                2 => encoder.set_restart_interval(4),
                3 => encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_4_4),
                _ => {}
            }
            let (data, color) = match variant {
                4 => (&gray, jpeg_encoder::ColorType::Luma),
                _ => (&rgb, jpeg_encoder::ColorType::Rgb),
            };
            encoder.encode(data, w, h, color).unwrap();
            let ours = decode(&bytes, Strictness::Strict)
                .unwrap_or_else(|e| panic!("variant {variant}: {e}"));
            let theirs = image::load_from_memory(&bytes).unwrap();
            let theirs = theirs.as_bytes();
            assert_eq!(ours.len(), theirs.len(), "variant {variant}");
            let diff: u64 = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| a.abs_diff(*b) as u64)
                .sum();
            let mean = diff as f64 / ours.len() as f64;
            assert!(mean < 1.5, "variant {variant}: mean difference {mean}");
        }
    }

    /// The data after the first picture's end marker is not read: an MPO file (a second JPEG
    /// after the first) decodes to its first picture, with no damage.
    #[test]
    fn a_second_picture_after_the_end_marker_is_left_alone() {
        let first = photo();
        let mut both = first.clone();
        both.extend_from_slice(&photo()[..5000]);
        let a = decode(&first, Strictness::Strict).unwrap();
        let b = decode(&both, Strictness::Strict).unwrap();
        assert!(a == b);
    }

    #[test]
    fn cut_files_are_truncated_and_lenient_mode_keeps_them() {
        let bytes = photo();
        for percent in [10, 50, 90, 99] {
            let cut = &bytes[..bytes.len() * percent / 100];
            let err = decode(cut, Strictness::Strict).err();
            assert_eq!(
                err.as_ref().and_then(Damage::from_image_error),
                Some(&Damage::Truncated),
                "{percent}%: {err:?}"
            );
            assert!(decode(cut, Strictness::Lenient).is_ok());
        }
    }

    #[test]
    fn corrupt_entropy_data_is_named() {
        let mut bytes = photo();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 200] {
            *b ^= 0x5A;
        }
        // An 0xFF made by the XOR can read as an unknown marker: libjpeg-turbo then stops (no
        // pixels at all); otherwise it warns, and only lenient mode keeps the pixels.
        let err = decode(&bytes, Strictness::Strict).unwrap_err();
        match Damage::from_image_error(&err) {
            Some(_) => assert!(decode(&bytes, Strictness::Lenient).is_ok()),
            None => assert!(err.to_string().contains("cannot decode JPEG"), "{err}"),
        }
    }
}
