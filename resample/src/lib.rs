//! Lanczos3 resampling of 8-bit images (1 to 4 channels, interleaved), through
//! `fast_image_resize`, behind one non-generic function.
//!
//! `fast_image_resize` is generic over its image types: every crate that calls `Resizer::resize`
//! instantiates its whole dispatch (each pixel type, each algorithm, each CPU extension) and
//! optimises it again. Behind [`resample`] that happens once, here, and the crates that resize
//! (the worker's decode-into-a-slot) compile it neither for their tests nor for each build of
//! their features.

#![deny(unsafe_code)]

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::{U8x2, U8x3, U8x4, U8};
use fast_image_resize::{FilterType, PixelTrait, ResizeAlg, ResizeOptions, Resizer};

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

/// The convolution's filter. Both are antialiased: when shrinking, the filter widens with the
/// scale, as Pillow's `resize` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Lanczos3 (a = 3): what `--resize` uses.
    Lanczos3,
    /// Bilinear (a triangle): Pillow's and torchvision's `BILINEAR`.
    Bilinear,
}

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
    resample_with(
        Filter::Lanczos3,
        src,
        src_size,
        channels,
        region,
        dst,
        dst_size,
    )
}

/// [`resample`] with the given filter.
pub fn resample_with(
    filter: Filter,
    src: &[u8],
    src_size: (u32, u32),
    channels: u32,
    region: Region,
    dst: &mut [u8],
    dst_size: (u32, u32),
) -> Result<(), ResampleError> {
    Resampler::new().resample(filter, src, src_size, channels, region, dst, dst_size)
}

/// A resampler that keeps its working buffers from one image to the next: for a loop over many
/// images (a training batch), which would otherwise allocate and free them for each.
#[derive(Default)]
pub struct Resampler {
    resizer: Resizer,
}

impl Resampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`resample_with`], reusing this resampler's buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn resample(
        &mut self,
        filter: Filter,
        src: &[u8],
        src_size: (u32, u32),
        channels: u32,
        region: Region,
        dst: &mut [u8],
        dst_size: (u32, u32),
    ) -> Result<(), ResampleError> {
        let (w, h) = (f64::from(src_size.0), f64::from(src_size.1));
        let filter = match filter {
            Filter::Lanczos3 => FilterType::Lanczos3,
            Filter::Bilinear => FilterType::Bilinear,
        };
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
        let options = match region {
            Region::Whole => options,
            Region::Centred => options.fit_into_destination(Some((0.5, 0.5))),
            Region::Box {
                left,
                top,
                width,
                height,
            } => {
                let inside = left >= 0.0 && top >= 0.0 && width > 0.0 && height > 0.0;
                if !inside || left + width > w || top + height > h {
                    return Err(ResampleError(format!(
                        "box {width}x{height} at ({left}, {top}) is not inside the {w}x{h} source"
                    )));
                }
                options.crop(left, top, width, height)
            }
        };
        let bytes = |(w, h): (u32, u32)| w as usize * h as usize * channels as usize;
        if src.len() != bytes(src_size) || dst.len() != bytes(dst_size) {
            return Err(ResampleError(format!(
                "{} bytes for {}x{} source pixels and {} for {}x{} destination pixels of {channels} \
                 channels",
                src.len(),
                src_size.0,
                src_size.1,
                dst.len(),
                dst_size.0,
                dst_size.1
            )));
        }
        // The four 8-bit pixel types only: `Resizer::resize` would instantiate all thirteen.
        match channels {
            1 => typed::<U8>(&mut self.resizer, src, src_size, dst, dst_size, &options),
            2 => typed::<U8x2>(&mut self.resizer, src, src_size, dst, dst_size, &options),
            3 => typed::<U8x3>(&mut self.resizer, src, src_size, dst, dst_size, &options),
            4 => typed::<U8x4>(&mut self.resizer, src, src_size, dst, dst_size, &options),
            _ => Err(ResampleError(format!(
                "{channels} channels (1 to 4 can be resampled)"
            ))),
        }
    }
}

fn typed<P: PixelTrait>(
    resizer: &mut Resizer,
    src: &[u8],
    src_size: (u32, u32),
    dst: &mut [u8],
    dst_size: (u32, u32),
    options: &ResizeOptions,
) -> Result<(), ResampleError> {
    let fail = |e: &dyn std::fmt::Display| ResampleError(e.to_string());
    let src = TypedImageRef::<P>::from_buffer(src_size.0, src_size.1, src).map_err(|e| fail(&e))?;
    let mut dst =
        TypedImage::<P>::from_buffer(dst_size.0, dst_size.1, dst).map_err(|e| fail(&e))?;
    resizer
        .resize_typed(&src, &mut dst, options)
        .map_err(|e| fail(&e))
}
