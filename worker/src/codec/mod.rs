//! Codecs: read a file's header (for planning), decode a file straight into its slot, encode a
//! slot to a file through a temporary file and a rename.
//!
//! What a file is comes from its magic bytes, never from its name. EXIF orientation is applied
//! on decode, so the slot holds what a viewer shows. This module never touches the block itself:
//! it sees a slot as a `&mut [u8]` of a known shape.
//!
//! - `decode`: probing a header, decoding into a slot, the JPEG luma plane.
//! - `encode`: every encoder, and what metadata each output carries.
//! - `files`: output paths, source identity and hash, temporaries, durability.

mod decode;
mod encode;
mod files;

pub use decode::*;
pub use encode::*;
pub use files::*;

use std::io;
use std::path::PathBuf;

use crate::jpeg::Damage;
use image::ImageFormat;

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

#[cfg(test)]
mod tests {
    use super::files::os_reason;
    use super::*;
    use crate::jpeg::Strictness;
    use crate::metadata::Metadata;
    use std::os::unix::ffi::OsStrExt;

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
            background: None,
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
                background: None,
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
