//! Resizing at decode time: decoding an image into a slot of the shape that `--resize` and
//! `--fit` give it (that shape, decided by the planner, is [`geometry`]'s).
//!
//! `--fit inside` (run's default) keeps each image's aspect ratio and fits it inside the box, so
//! every image gets a slot of its own shape, sized as libvips' `thumbnail` sizes it. `stretch`,
//! `cover` and `contain` give every image the box's shape: one `(N, H, W, C)` array.
//!
//! This module never touches the block: it sees a slot as a `&mut [u8]` of a known shape.

use std::path::Path;

use image::ImageFormat;

use crate::codec::{decode_into, probe, CodecError, Decoded, Probe, FORMATS};
use crate::jpeg::{Output, Stored, Strictness};

mod geometry;
pub use geometry::{parse_size, Fit, Geometry, GeometryError, Size};

/// Decodes `path` and resizes it into `slot`, a `(height, width, channels)` buffer, with Lanczos3
/// through fast_image_resize. A JPEG at least four times the size it is needed at is decoded
/// shrunk ([`shrink_on_load`]); anything else at its own size into `scratch` first. A slot of
/// the image's own size gets the image straight, with no resampling at all (`--no-enlarge`
/// leaves a small image's pixels as they are).
pub fn decode_resized(
    path: &Path,
    slot: &mut [u8],
    (height, width, channels): (u32, u32, u32),
    fit: Fit,
    max_pixels: u64,
    strictness: Strictness,
    scratch: &mut Vec<u8>,
) -> Result<Decoded, CodecError> {
    let probe = probe(path, max_pixels)?;
    let source = (probe.width, probe.height);
    if source == (width, height) {
        return decode_into(
            path,
            slot,
            (height, width, channels),
            max_pixels,
            strictness,
        );
    }
    let target = (width, height);
    if let Some(loaded) =
        shrink_on_load(path, &probe, channels, needed(fit, source, target), scratch)
    {
        resample(scratch, loaded, channels, slot, target, fit)?;
        return Ok(Decoded::Clean);
    }
    scratch.clear();
    scratch.resize(source.0 as usize * source.1 as usize * channels as usize, 0);
    let decoded = decode_into(
        path,
        scratch,
        (source.1, source.0, channels),
        max_pixels,
        strictness,
    )?;
    resample(scratch, source, channels, slot, target, fit)?;
    Ok(decoded)
}

/// The luma plane of a colour JPEG resized into `plane` (`height x width` bytes), for a chain
/// that starts with grayscale: as [`crate::codec::decode_jpeg_luma`] gives it at full size, here
/// shrunk on load when the JPEG is at least four times the size needed. False when the file is not a
/// colour JPEG or does not decode cleanly: the caller then takes the general path, which words
/// the error.
pub fn decode_jpeg_luma_resized(
    path: &Path,
    plane: &mut [u8],
    (height, width): (u32, u32),
    fit: Fit,
    max_pixels: u64,
    scratch: &mut Vec<u8>,
) -> bool {
    let Ok(probe) = probe(path, max_pixels) else {
        return false;
    };
    if FORMATS[probe.format as usize] != ImageFormat::Jpeg || probe.channels() != 3 {
        return false;
    }
    let (source, target) = ((probe.width, probe.height), (width, height));
    let loaded = match shrink_on_load(path, &probe, 1, needed(fit, source, target), scratch) {
        Some(loaded) => loaded,
        None => {
            scratch.clear();
            scratch.resize(source.0 as usize * source.1 as usize, 0);
            let mut stored = Vec::new();
            if !crate::codec::decode_jpeg_luma(path, scratch, source.1, source.0, &mut stored) {
                return false;
            }
            source
        }
    };
    resample(scratch, loaded, 1, plane, target, fit).is_ok()
}

/// The smallest `(width, height)` the source must have before the resampling step for `fit` to
/// only shrink it into `target`: the target itself, or for `cover` and `contain` the image scaled
/// to cover, or to fit inside, the target.
fn needed(fit: Fit, (sw, sh): (u32, u32), (tw, th): (u32, u32)) -> (u32, u32) {
    let scaled = |scale: f64| {
        (
            (sw as f64 * scale).ceil() as u32,
            (sh as f64 * scale).ceil() as u32,
        )
    };
    let (x, y) = (tw as f64 / sw as f64, th as f64 / sh as f64);
    match fit {
        Fit::Stretch | Fit::Inside => (tw, th),
        Fit::Cover => scaled(x.max(y)),
        Fit::Contain => scaled(x.min(y)),
    }
}

/// Shrink-on-load: decodes a JPEG at 1/8, 1/4 or 1/2 of its size, the smallest of those that
/// is still at least twice `needed` (shown orientation), straight from its DCT coefficients
/// (libjpeg-turbo's scaled IDCT), into `scratch` as `channels` (1 gray, 3 RGB) interleaved
/// samples, turned by its EXIF orientation. Gives the shape loaded, `(width, height)`.
///
/// Twice, as libvips leaves it: a scaled IDCT is close to a box filter, and Lanczos3 needs room
/// to smooth it. Decoded down to the size needed itself, a 640 x 427 photo resized to 80 x 53
/// is 31.6 dB from the full decode's result (PSNR); with a factor of two left, 40 dB and more.
///
/// None whenever it cannot vouch for the pixels: not a JPEG, not four times the size needed,
/// or any error or warning from libjpeg-turbo. The caller then decodes at full size with the
/// same library, which gives the same verdict and words it: corrupt data never becomes a small
/// picture here.
fn shrink_on_load(
    path: &Path,
    probe: &Probe,
    channels: u32,
    (nw, nh): (u32, u32),
    scratch: &mut Vec<u8>,
) -> Option<(u32, u32)> {
    use image::metadata::Orientation;
    if FORMATS[probe.format as usize] != ImageFormat::Jpeg || !matches!(channels, 1 | 3) {
        return None;
    }
    let turned = crate::codec::swaps_axes(probe.orientation);
    let (stored_w, stored_h) = if turned {
        (probe.height, probe.width)
    } else {
        (probe.width, probe.height)
    };
    let (nw, nh) = if turned { (nh, nw) } else { (nw, nh) };
    let denom = [8u32, 4, 2]
        .into_iter()
        .find(|d| stored_w.div_ceil(*d) >= 2 * nw && stored_h.div_ceil(*d) >= 2 * nh)?;
    let mut jpeg = crate::jpeg::Jpeg::new(std::fs::read(path).ok()?).ok()?;
    let output = match (channels, jpeg.stored()) {
        (1, Stored::YCbCr | Stored::Gray) => Output::Gray,
        (3, Stored::YCbCr | Stored::Rgb) => Output::Rgb,
        _ => return None,
    };
    if jpeg.stored_size() != (stored_w, stored_h) {
        return None;
    }
    let (w, h) = jpeg.scaled_size(output, denom).ok()?;
    scratch.clear();
    scratch.resize(w as usize * h as usize * channels as usize, 0);
    if jpeg.decode(output, denom, scratch) != Ok(None) {
        return None;
    }
    if probe.orientation == Orientation::NoTransforms {
        return Some((w, h));
    }
    let pixels = std::mem::take(scratch);
    let mut image = if channels == 1 {
        image::DynamicImage::ImageLuma8(image::ImageBuffer::from_raw(w, h, pixels)?)
    } else {
        image::DynamicImage::ImageRgb8(image::ImageBuffer::from_raw(w, h, pixels)?)
    };
    image.apply_orientation(probe.orientation);
    let shape = (image.width(), image.height());
    *scratch = image.into_bytes();
    Some(shape)
}

/// Resizes `src` (`sw x sh x channels`) into `slot` (`width x height x channels`) as `fit` says,
/// with Lanczos3 (the `shmpipe-resample` crate).
pub(crate) fn resample(
    src: &[u8],
    (sw, sh): (u32, u32),
    channels: u32,
    slot: &mut [u8],
    (width, height): (u32, u32),
    fit: Fit,
) -> Result<(), CodecError> {
    use shmpipe_resample::Region;
    let resize_err =
        |e: shmpipe_resample::ResampleError| CodecError::Decode(format!("resize failed: {e}"));
    let region = match fit {
        Fit::Stretch | Fit::Inside => Region::Whole,
        Fit::Cover => Region::Centred,
        Fit::Contain => {
            let scale = (width as f64 / sw as f64).min(height as f64 / sh as f64);
            let fw = ((sw as f64 * scale).round() as u32).clamp(1, width);
            let fh = ((sh as f64 * scale).round() as u32).clamp(1, height);
            let c = channels as usize;
            let row = fw as usize * c;
            let mut fitted = vec![0u8; row * fh as usize];
            shmpipe_resample::resample(
                src,
                (sw, sh),
                channels,
                Region::Whole,
                &mut fitted,
                (fw, fh),
            )
            .map_err(resize_err)?;
            slot.fill(0);
            let (x0, y0) = ((width - fw) / 2, (height - fh) / 2);
            for (y, src_row) in fitted.chunks_exact(row).enumerate() {
                let at = ((y0 as usize + y) * width as usize + x0 as usize) * c;
                slot[at..at + row].copy_from_slice(src_row);
            }
            return Ok(());
        }
    };
    shmpipe_resample::resample(src, (sw, sh), channels, region, slot, (width, height))
        .map_err(resize_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let se: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        10.0 * (255.0f64.powi(2) / (se / a.len() as f64).max(1e-9)).log10()
    }

    /// The shrink-on-load result and the full-size decode resized into the same slot, for each
    /// reduction (1/8, 1/4, 1/2), in RGB and as a luma plane: within 35 dB of each other.
    fn compare_with_full_decode(path: &Path, boxes: &[(u32, u32, u32)]) {
        let max = crate::codec::DEFAULT_MAX_PIXELS;
        let probe = probe(path, max).unwrap();
        let source = (probe.width, probe.height);
        for &(bw, bh, denom) in boxes {
            let geometry = Geometry::new((Some(bw), Some(bh)), Fit::Inside, false).unwrap();
            let (w, h) = geometry.slot_shape(source.0, source.1);
            let mut scratch = Vec::new();
            for channels in [3, 1] {
                let loaded =
                    shrink_on_load(path, &probe, channels, (w, h), &mut scratch).expect("used");
                let turned = crate::codec::swaps_axes(probe.orientation);
                let stored_w = if turned { source.1 } else { source.0 };
                let loaded_stored_w = if turned { loaded.1 } else { loaded.0 };
                assert_eq!(loaded_stored_w, stored_w.div_ceil(denom), "{bw}x{bh}");
                let mut fast = vec![0; (w * h * channels) as usize];
                let mut full = vec![0; (source.0 * source.1 * channels) as usize];
                let mut slow = fast.clone();
                if channels == 3 {
                    let shape = (h, w, 3);
                    let got = decode_resized(
                        path,
                        &mut fast,
                        shape,
                        Fit::Inside,
                        max,
                        Strictness::Strict,
                        &mut scratch,
                    );
                    assert_eq!(got.unwrap(), Decoded::Clean);
                    let whole = (source.1, source.0, 3);
                    let got = decode_into(path, &mut full, whole, max, Strictness::Strict);
                    assert_eq!(got.unwrap(), Decoded::Clean);
                } else {
                    assert!(decode_jpeg_luma_resized(
                        path,
                        &mut fast,
                        (h, w),
                        Fit::Inside,
                        max,
                        &mut scratch
                    ));
                    let mut stored = Vec::new();
                    assert!(crate::codec::decode_jpeg_luma(
                        path,
                        &mut full,
                        source.1,
                        source.0,
                        &mut stored
                    ));
                }
                resample(&full, source, channels, &mut slow, (w, h), Fit::Inside).unwrap();
                let db = psnr(&fast, &slow);
                eprintln!(
                    "{} {bw}x{bh} 1/{denom} {channels} channels: {db:.1} dB",
                    path.display()
                );
                assert!(
                    db > 35.0,
                    "{} {bw}x{bh} ({channels} channels): {db:.1} dB",
                    path.display()
                );
            }
        }
    }

    fn asset(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../assets")
            .join(name)
    }

    #[test]
    fn shrink_on_load_stays_close_to_the_full_decode_on_photos() {
        // 1600 x 900 and 640 x 427 photos: each box picks the reduction shown.
        compare_with_full_decode(
            &asset("seeding.jpg"),
            &[(100, 100, 8), (160, 160, 4), (400, 400, 2)],
        );
        compare_with_full_decode(&asset("rocket.jpg"), &[(40, 40, 8), (80, 80, 4)]);
    }

    #[test]
    fn shrink_on_load_turns_an_exif_rotated_photo() {
        use image::ImageEncoder;
        let photo = image::open(asset("seeding.jpg")).unwrap().to_rgb8();
        let mut jpeg = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90);
        encoder
            .set_exif_metadata(crate::codec::exif_orientation(6))
            .unwrap();
        let (w, h) = photo.dimensions();
        encoder
            .write_image(photo.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turned.jpg");
        std::fs::write(&path, jpeg).unwrap();
        // Shown 900 x 1600: the box's height limits it.
        let probe = probe(&path, crate::codec::DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((probe.width, probe.height), (900, 1600));
        compare_with_full_decode(&path, &[(100, 100, 8), (200, 200, 2)]);
    }

    #[test]
    fn a_jpeg_not_four_times_the_size_needed_is_decoded_in_full() {
        let path = asset("rocket.jpg"); // 640 x 427
        let probe = probe(&path, crate::codec::DEFAULT_MAX_PIXELS).unwrap();
        // Half its size would leave Lanczos3 less than a factor of two.
        assert!(shrink_on_load(&path, &probe, 3, (161, 107), &mut Vec::new()).is_none());
        assert!(shrink_on_load(&path, &probe, 3, (160, 107), &mut Vec::new()).is_some());
    }
}
