//! JPEG decoding that tells a damaged file from a good one.
//!
//! zune-jpeg, the decoder `image` uses, fills whatever a truncated or corrupt scan leaves
//! undecoded with grey and returns Ok unless it is in strict mode, and `image` always turns strict
//! mode off. [`JpegDecoder`] is `image`'s own wrapper around zune-jpeg (same colour handling, same
//! pixels for a good file) with the headers read leniently (extra bytes between markers, which
//! libjpeg accepts with a warning, stay accepted) and the scan decoded strictly, plus three checks
//! strict mode lacks (see [`ScanDecoder`]):
//! - no EOI marker after the scan: truncated (zune-jpeg misses a cut within the last row);
//! - a sequential file's decoder reading past the end of its scan data: corrupt;
//! - the decoder finishing the last block with scan data left unread: corrupt.
//!
//! The last two catch corruption that desynchronises the Huffman decoding without producing an
//! invalid code, which strict mode alone lets through. Progressive files and files with restart
//! markers get the EOI check and strict mode only. Damage surfaces as a [`Damage`] inside
//! `image`'s decoding error.
//!
//! [`Strictness::Lenient`] decodes a damaged file as far as it goes (grey after that), for
//! `--allow-truncated`.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use image::error::{DecodingError, ImageFormatHint, LimitError, LimitErrorKind};
use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageResult, Limits};
use zune_core::bytestream::{ZByteIoError, ZByteReaderTrait, ZCursor, ZSeekFrom};
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// What a damaged JPEG gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strictness {
    /// An error naming the damage (the default).
    #[default]
    Strict,
    /// The pixels the file still holds, grey for the rest (`--allow-truncated`).
    Lenient,
}

/// Why a JPEG's pixels cannot be trusted. Its text is the image's failure reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("truncated JPEG: data ends before the last row")]
    Truncated,
    #[error("corrupt JPEG data: {0}")]
    Corrupt(String),
}

impl Damage {
    /// Classifies an error zune-jpeg gave while decoding the scan in strict mode.
    fn of(err: zune_jpeg::errors::DecodeErrors) -> Damage {
        use zune_jpeg::errors::DecodeErrors;
        match err {
            DecodeErrors::ExhaustedData | DecodeErrors::IoErrors(_) => Damage::Truncated,
            DecodeErrors::FormatStatic(text) if text.contains("Premature end") => Damage::Truncated,
            err => Damage::Corrupt(err.to_string()),
        }
    }

    /// The damage behind a decoding error from [`JpegDecoder`], if that is what it was.
    pub fn from_image_error(err: &ImageError) -> Option<&Damage> {
        match err {
            ImageError::Decoding(d) => std::error::Error::source(d)?.downcast_ref::<Damage>(),
            _ => None,
        }
    }
}

/// Where the first scan's entropy-coded data starts (the byte after its SOS header), and whether
/// the file is sequential without restart markers, found by walking the marker segments from SOI.
fn first_scan(data: &[u8]) -> Option<(usize, bool)> {
    let mut at = 2; // past SOI
    let mut plain = true;
    loop {
        if data.get(at) != Some(&0xFF) {
            // Not at a marker: extra bytes between segments (tolerated). Find the next one.
            at += data.get(at..)?.iter().position(|&b| b == 0xFF)?;
            continue;
        }
        // Fill bytes (0xFF) may precede a marker.
        while data.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let marker = *data.get(at + 1)?;
        let len = u16::from_be_bytes([*data.get(at + 2)?, *data.get(at + 3)?]) as usize;
        // Progressive frames, and a restart interval (DRI) other than 0.
        let progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
        let restarts = marker == 0xDD && data.get(at + 4..at + 6).is_some_and(|n| n != [0, 0]);
        plain &= !(progressive || restarts);
        at += 2 + len;
        if marker == 0xDA {
            return Some((at.min(data.len()), plain));
        }
    }
}

/// Where the EOI marker that ends the file's scans is, if there is one: the last FF D9 after the
/// start of the first scan. Inside entropy-coded data a 0xFF byte is always followed by 0x00 or
/// a restart marker, so an FF D9 there is the real end; an embedded EXIF thumbnail's EOI comes
/// before the scan and does not count. Searched from the end, where it is in a whole file.
fn end_of_scans(data: &[u8], scan_start: usize) -> Option<usize> {
    data[scan_start..]
        .windows(2)
        .rposition(|pair| pair == [0xFF, 0xD9])
        .map(|at| scan_start + at)
}

/// Whether the file has an EOI marker after the start of its first scan (see [`end_of_scans`]).
pub fn ends_with_eoi(data: &[u8]) -> bool {
    first_scan(data).is_some_and(|(start, _)| end_of_scans(data, start).is_some())
}

/// Prepares a whole file's bytes for a strict decode: gives where its last scan's data ends
/// when the file is sequential and whole (see [`ScanDecoder`]), and whether it is whole.
///
/// zune-jpeg pads a scan whose Huffman decoding ran past the data with zero bits once it meets
/// EOI, and goes on: corrupt data that desynchronises the decoder without an invalid code is not
/// an error even in strict mode. So the EOI of a sequential file is replaced by a tripwire: 8 zero
/// bytes, which a good scan's bit buffer (at most 63 bits ahead of the decoder) never reads to
/// the end of, then the undefined marker FF 01, which zune-jpeg always refuses. A scan decoded
/// more than 8 bytes past its end meets it and fails. (Progressive files, and files with restart
/// markers, keep their EOI: zune-jpeg reads the marker after their last scan or interval. A
/// restart marker out of place is an error in strict mode; a progressive file gets only the
/// checks of strict mode.)
fn arm(data: &mut Vec<u8>) -> (Option<usize>, bool) {
    let Some((start, plain)) = first_scan(data) else {
        return (None, false);
    };
    let Some(eoi) = end_of_scans(data, start) else {
        return (None, false);
    };
    if !plain {
        return (None, true);
    }
    data.truncate(eoi);
    data.extend_from_slice(&[0; 8]);
    data.extend_from_slice(&[0xFF, 0x01]);
    (Some(eoi), true)
}

/// zune-jpeg's reader over a file's bytes that remembers how far the Huffman decoder's reads
/// went: its bit buffer reads single bytes (`read_byte_no_error`) and 4-byte words, while marker
/// searches read through `read_exact_bytes` one byte at a time.
pub(crate) struct Watched {
    inner: ZCursor<Vec<u8>>,
    reached: Rc<Cell<u64>>,
}

impl Watched {
    #[inline(always)]
    fn note(&mut self) {
        if let Ok(at) = self.inner.z_position() {
            if at > self.reached.get() {
                self.reached.set(at);
            }
        }
    }
}

impl ZByteReaderTrait for Watched {
    #[inline(always)]
    fn read_byte_no_error(&mut self) -> u8 {
        let byte = self.inner.read_byte_no_error();
        self.note();
        byte
    }
    #[inline(always)]
    fn read_exact_bytes(&mut self, buf: &mut [u8]) -> Result<(), ZByteIoError> {
        let read = self.inner.read_exact_bytes(buf);
        if buf.len() == 4 {
            self.note();
        }
        read
    }
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<usize, ZByteIoError> {
        self.inner.read_bytes(buf)
    }
    fn peek_bytes(&mut self, buf: &mut [u8]) -> Result<usize, ZByteIoError> {
        self.inner.peek_bytes(buf)
    }
    fn peek_exact_bytes(&mut self, buf: &mut [u8]) -> Result<(), ZByteIoError> {
        self.inner.peek_exact_bytes(buf)
    }
    fn z_seek(&mut self, from: ZSeekFrom) -> Result<u64, ZByteIoError> {
        self.inner.z_seek(from)
    }
    fn is_eof(&mut self) -> Result<bool, ZByteIoError> {
        self.inner.is_eof()
    }
    fn z_position(&mut self) -> Result<u64, ZByteIoError> {
        self.inner.z_position()
    }
    fn read_remaining(&mut self, sink: &mut Vec<u8>) -> Result<usize, ZByteIoError> {
        self.inner.read_remaining(sink)
    }
}

/// A zune-jpeg decoder with its headers read leniently (extra bytes between markers stay
/// accepted, as libjpeg does) and its scan decoded with the damage checks of this module.
pub(crate) struct ScanDecoder {
    pub(crate) decoder: zune_jpeg::JpegDecoder<Watched>,
    strictness: Strictness,
    /// Where a sequential file's scan data ends (the tripwire starts), in strict mode.
    scan_end: Option<usize>,
    /// The file has its EOI (always true when lenient).
    whole: bool,
    reached: Rc<Cell<u64>>,
}

impl ScanDecoder {
    /// Reads the headers of the JPEG in `data`; `scan` are the options for the scan, whose
    /// strictness is set here.
    pub(crate) fn new(
        mut data: Vec<u8>,
        strictness: Strictness,
        scan: DecoderOptions,
    ) -> Result<ScanDecoder, zune_jpeg::errors::DecodeErrors> {
        let (scan_end, whole) = match strictness {
            Strictness::Strict => arm(&mut data),
            Strictness::Lenient => (None, true),
        };
        let reached = Rc::new(Cell::new(0));
        let reader = Watched {
            inner: ZCursor::new(data),
            reached: Rc::clone(&reached),
        };
        let mut decoder =
            zune_jpeg::JpegDecoder::new_with_options(reader, scan.set_strict_mode(false));
        decoder.decode_headers()?;
        decoder.set_options(scan.set_strict_mode(strictness == Strictness::Strict));
        Ok(ScanDecoder {
            decoder,
            strictness,
            scan_end,
            whole,
            reached,
        })
    }

    /// Decodes the scan into `out` (which the headers say fits). In strict mode a damaged file
    /// is `Err(Ok(damage))`; any other error is `Err(Err(e))`.
    pub(crate) fn decode_into(
        &mut self,
        out: &mut [u8],
    ) -> Result<(), Result<Damage, zune_jpeg::errors::DecodeErrors>> {
        let decoded = self.decoder.decode_into(out);
        if self.strictness == Strictness::Lenient {
            return decoded.map_err(Err);
        }
        decoded.map_err(|e| Ok(Damage::of(e)))?;
        if !self.whole {
            return Err(Ok(Damage::Truncated));
        }
        match self.scan_end {
            // The Huffman decoder stopped reading before the end of the data: it decoded every
            // block from fewer bits than the file holds, so some were decoded out of step.
            Some(end) if self.reached.get() < end as u64 => Err(Ok(Damage::Corrupt(format!(
                "{} bytes of scan data left after the last block",
                end as u64 - self.reached.get()
            )))),
            _ => Ok(()),
        }
    }
}

/// `image`'s JPEG decoder (same colour handling, same orientation) with the damage checks of
/// [`ScanDecoder`].
pub struct JpegDecoder {
    scan: ScanDecoder,
    width: u32,
    height: u32,
    color: ColorType,
    orientation: Orientation,
}

fn jpeg_error(err: zune_jpeg::errors::DecodeErrors) -> ImageError {
    use zune_jpeg::errors::DecodeErrors;
    match err {
        DecodeErrors::LargeDimensions(_) => {
            ImageError::Limits(LimitError::from_kind(LimitErrorKind::DimensionError))
        }
        err => ImageError::Decoding(DecodingError::new(
            ImageFormatHint::Exact(ImageFormat::Jpeg),
            err,
        )),
    }
}

impl JpegDecoder {
    /// Reads the file at `path` and its headers.
    pub fn open(path: &Path, strictness: Strictness) -> ImageResult<JpegDecoder> {
        let data = std::fs::read(path)?;
        let options = DecoderOptions::default()
            .set_max_width(usize::MAX)
            .set_max_height(usize::MAX);
        let mut scan = ScanDecoder::new(data, strictness, options).map_err(jpeg_error)?;
        let decoder = &mut scan.decoder;
        let (width, height) = decoder.dimensions().expect("headers were decoded");
        let input = decoder.input_colorspace().expect("headers were decoded");
        // As `image` does: RGB(A) and luma(+alpha) as they are, everything else (YCbCr, CMYK,
        // YCCK) converted to RGB.
        let (out, color) = match input {
            ColorSpace::RGBA => (input, ColorType::Rgba8),
            ColorSpace::Luma => (input, ColorType::L8),
            ColorSpace::LumaA => (input, ColorType::La8),
            _ => (ColorSpace::RGB, ColorType::Rgb8),
        };
        decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
        let orientation = decoder
            .exif()
            .and_then(|exif| Orientation::from_exif_chunk(exif))
            .unwrap_or(Orientation::NoTransforms);
        Ok(JpegDecoder {
            scan,
            width: width as u32,
            height: height as u32,
            color,
            orientation,
        })
    }
}

impl ImageDecoder for JpegDecoder {
    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn color_type(&self) -> ColorType {
        self.color
    }

    fn icc_profile(&mut self) -> ImageResult<Option<Vec<u8>>> {
        Ok(self.scan.decoder.icc_profile())
    }

    fn exif_metadata(&mut self) -> ImageResult<Option<Vec<u8>>> {
        Ok(self.scan.decoder.exif().cloned())
    }

    fn orientation(&mut self) -> ImageResult<Orientation> {
        Ok(self.orientation)
    }

    fn set_limits(&mut self, limits: Limits) -> ImageResult<()> {
        limits.check_support(&image::LimitSupport::default())?;
        limits.check_dimensions(self.width, self.height)
    }

    fn read_image(mut self, buf: &mut [u8]) -> ImageResult<()> {
        if buf.len() as u64 != self.total_bytes() {
            return Err(ImageError::Decoding(DecodingError::new(
                ImageFormatHint::Exact(ImageFormat::Jpeg),
                format!(
                    "buffer of {} bytes for an image of {} bytes",
                    buf.len(),
                    self.total_bytes()
                ),
            )));
        }
        self.scan.decode_into(buf).map_err(|e| match e {
            Ok(damage) => ImageError::Decoding(DecodingError::new(
                ImageFormatHint::Exact(ImageFormat::Jpeg),
                damage,
            )),
            Err(e) => jpeg_error(e),
        })
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

    /// Good files of every kind this module treats apart (sequential, progressive, with restart
    /// markers, gray, subsampled or not) decode to `image`'s own pixels, in strict mode.
    #[test]
    fn whole_files_decode_as_image_decodes_them() {
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
            assert!(ends_with_eoi(&bytes), "variant {variant}");
            let ours = decode(&bytes, Strictness::Strict)
                .unwrap_or_else(|e| panic!("variant {variant}: {e}"));
            let theirs = image::load_from_memory(&bytes).unwrap();
            assert!(ours == theirs.as_bytes(), "variant {variant}");
        }
    }

    #[test]
    fn cut_files_are_truncated_and_lenient_mode_keeps_them() {
        let bytes = photo();
        for percent in [10, 50, 90, 99] {
            let cut = &bytes[..bytes.len() * percent / 100];
            assert!(!ends_with_eoi(cut), "{percent}%");
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
        let (start, _) = first_scan(&bytes).unwrap();
        let middle = start + (bytes.len() - start) / 2;
        for b in &mut bytes[middle..middle + 200] {
            *b ^= 0x5A;
        }
        let err = decode(&bytes, Strictness::Strict).unwrap_err();
        assert!(Damage::from_image_error(&err).is_some(), "{err}");
        decode(&bytes, Strictness::Lenient).unwrap();
    }
}
