//! Where each image is cropped: torchvision's `RandomResizedCrop.get_params`, step for step, on
//! our random stream ([`crate::rng::Stream`]); and the centred crop of validation.
//!
//! This file must never touch a pixel: it gives boxes.

use crate::rng::Stream;

/// A box of an image: its top row, left column, height and width, in whole pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// Python's `int(round(x))`: halves to even.
fn round_half_even(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision's `RandomResizedCrop.get_params(img, scale, ratio)` for an image of
/// `height x width`: up to ten tries of an area fraction uniform in `scale` and an aspect ratio
/// log-uniform in `ratio`, each rounded to whole pixels and kept when it fits, its corner
/// uniform over the places it fits; else the centred crop of the ratio nearest the image's.
/// Draws, per try: the area, the log-ratio; then, once a box fits, its top, then its left.
pub fn random_resized_crop(
    rng: &mut Stream,
    (height, width): (u32, u32),
    scale: (f64, f64),
    ratio: (f64, f64),
) -> CropBox {
    let (h_img, w_img) = (i64::from(height), i64::from(width));
    let area = (h_img * w_img) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(log_lo, log_hi).exp();
        let w = round_half_even((target_area * aspect).sqrt());
        let h = round_half_even((target_area / aspect).sqrt());
        if 0 < w && w <= w_img && 0 < h && h <= h_img {
            let top = rng.below((h_img - h + 1) as u64) as u32;
            let left = rng.below((w_img - w + 1) as u64) as u32;
            return CropBox {
                top,
                left,
                height: h as u32,
                width: w as u32,
            };
        }
    }
    let in_ratio = w_img as f64 / h_img as f64;
    let (min_ratio, max_ratio) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (w, h) = if in_ratio < min_ratio {
        (w_img, round_half_even(w_img as f64 / min_ratio))
    } else if in_ratio > max_ratio {
        (round_half_even(h_img as f64 * max_ratio), h_img)
    } else {
        (w_img, h_img)
    };
    let (w, h) = (w.clamp(1, w_img), h.clamp(1, h_img));
    CropBox {
        top: ((h_img - h) / 2) as u32,
        left: ((w_img - w) / 2) as u32,
        height: h as u32,
        width: w as u32,
    }
}

/// Validation's crop: the centred box of the output's aspect ratio whose shorter side is
/// `fraction` of the image's (timm's `crop_pct`: 0.875 is `Resize(256)` then `CenterCrop(224)`).
pub fn centre_crop(
    (height, width): (u32, u32),
    (out_h, out_w): (u32, u32),
    fraction: f64,
) -> CropBox {
    let (h_img, w_img) = (f64::from(height), f64::from(width));
    // The largest box of the output's aspect inside the image, then scaled by `fraction`.
    let aspect = f64::from(out_w) / f64::from(out_h);
    let (mut w, mut h) = if w_img / h_img > aspect {
        (h_img * aspect, h_img)
    } else {
        (w_img, w_img / aspect)
    };
    w *= fraction;
    h *= fraction;
    let w = (round_half_even(w) as u32).clamp(1, width);
    let h = (round_half_even(h) as u32).clamp(1, height);
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}
