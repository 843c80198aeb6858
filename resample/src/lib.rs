//! Lanczos3 resampling of 8-bit images (1 to 4 channels, interleaved), through
//! `fast_image_resize`, behind one non-generic function.
//!
//! `fast_image_resize` is generic over its image types: every crate that calls `Resizer::resize`
//! instantiates its whole dispatch (each pixel type, each algorithm, each CPU extension) and
//! optimises it again. Behind [`resample`] that happens once, here, and the crates that resize
//! (the worker's decode-into-a-slot) compile it neither for their tests nor for each build of
//! their features.

#![deny(unsafe_code)]

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Which part of the source is resampled onto the whole destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Region {
    /// The whole source, stretched to the destination's aspect if it differs.
    Whole,
    /// The largest centred part of the source with the destination's aspect ratio (`--fit
    /// cover`).
    Centred,
    /// A box of the source in pixels, `left`, `top`, `width`, `height`, which may be
    /// fractional; it must lie inside the source.
    Box {
        left: f64,
        top: f64,
        width: f64,
        height: f64,
    },
}

/// Why a resample was refused: a size that does not match its buffer, a channel count outside
/// 1..=4, or a box outside the source.
#[derive(Debug, Clone, PartialEq)]
pub struct ResampleError(pub String);

impl std::fmt::Display for ResampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResampleError {}

/// Resamples `region` of `src` (`src_size` pixels of `channels` bytes, rows packed) onto all of
/// `dst` (`dst_size`), with a Lanczos3 convolution.
pub fn resample(
    src: &[u8],
    src_size: (u32, u32),
    channels: u32,
    region: Region,
    dst: &mut [u8],
    dst_size: (u32, u32),
) -> Result<(), ResampleError> {
    let fail = |e: &dyn std::fmt::Display| ResampleError(e.to_string());
    let pixel_type = match channels {
        1 => PixelType::U8,
        2 => PixelType::U8x2,
        3 => PixelType::U8x3,
        4 => PixelType::U8x4,
        _ => {
            return Err(ResampleError(format!(
                "{channels} channels (1 to 4 can be resampled)"
            )))
        }
    };
    let src = ImageRef::new(src_size.0, src_size.1, src, pixel_type).map_err(|e| fail(&e))?;
    let mut dst =
        Image::from_slice_u8(dst_size.0, dst_size.1, dst, pixel_type).map_err(|e| fail(&e))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    let options = match region {
        Region::Whole => options,
        Region::Centred => options.fit_into_destination(Some((0.5, 0.5))),
        Region::Box {
            left,
            top,
            width,
            height,
        } => {
            let (w, h) = (f64::from(src_size.0), f64::from(src_size.1));
            let inside = left >= 0.0 && top >= 0.0 && width > 0.0 && height > 0.0;
            if !inside || left + width > w || top + height > h {
                return Err(ResampleError(format!(
                    "box {width}x{height} at ({left}, {top}) is not inside the {w}x{h} source"
                )));
            }
            options.crop(left, top, width, height)
        }
    };
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_image_stays_constant_in_every_region() {
        let src = vec![77u8; 40 * 30 * 3];
        for region in [
            Region::Whole,
            Region::Centred,
            Region::Box {
                left: 3.5,
                top: 2.0,
                width: 20.0,
                height: 11.25,
            },
        ] {
            let mut dst = vec![0u8; 16 * 9 * 3];
            resample(&src, (40, 30), 3, region, &mut dst, (16, 9)).unwrap();
            assert!(dst.iter().all(|&v| v == 77), "{region:?}");
        }
    }

    #[test]
    fn a_box_crops_what_it_names() {
        // Left half 0, right half 255: a box in the right half, further from the left half than
        // the filter reaches (three source pixels a destination pixel at this 4x scale, 12),
        // resamples to all 255.
        let (w, h) = (128u32, 8u32);
        let src: Vec<u8> = (0..w * h)
            .map(|i| if i % w < w / 2 { 0 } else { 255 })
            .collect();
        let mut dst = vec![0u8; 8 * 4];
        let region = Region::Box {
            left: 96.0,
            top: 0.0,
            width: 32.0,
            height: 8.0,
        };
        resample(&src, (w, h), 1, region, &mut dst, (8, 4)).unwrap();
        assert!(dst.iter().all(|&v| v == 255), "{dst:?}");
    }

    #[test]
    fn bad_shapes_and_boxes_are_refused() {
        let src = vec![0u8; 10 * 10];
        let mut dst = vec![0u8; 4 * 4];
        let outside = Region::Box {
            left: 5.0,
            top: 0.0,
            width: 6.0,
            height: 4.0,
        };
        assert!(resample(&src, (10, 10), 1, outside, &mut dst, (4, 4)).is_err());
        assert!(resample(&src, (10, 11), 1, Region::Whole, &mut dst, (4, 4)).is_err());
        assert!(resample(&src, (10, 10), 5, Region::Whole, &mut dst, (4, 4)).is_err());
        assert!(resample(&src, (10, 10), 1, Region::Whole, &mut dst, (4, 5)).is_err());
    }
}
