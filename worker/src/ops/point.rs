//! Point ops: each output byte depends only on its input byte (folded into one 256-entry lookup
//! table per run of point ops), and grayscale, in place or packed into a gray plane.
//!
//! Colour ops here leave alpha (the 2nd of gray and alpha, the 4th of RGBA) unchanged; grayscale
//! of a gray image changes nothing. This file must never allocate per
//! pixel nor read a neighbour.

use multiversion::multiversion;

use super::Op;

pub(super) fn point_lut(op: &Op) -> Option<[u8; 256]> {
    let mut lut = [0u8; 256];
    for (v, out) in lut.iter_mut().enumerate() {
        let x = v as f64;
        let y = match *op {
            Op::Invert => 255.0 - x,
            Op::Brightness(f) | Op::Scale(f) => (x * f as f64).round(),
            Op::Contrast(f) => ((x - 128.0) * f as f64 + 128.0).round(),
            Op::Gamma(g) => (255.0 * (x / 255.0).powf(1.0 / g as f64)).round(),
            Op::Threshold(t) => {
                if v >= t as usize {
                    255.0
                } else {
                    0.0
                }
            }
            _ => return None,
        };
        *out = y.clamp(0.0, 255.0) as u8;
    }
    Some(lut)
}

/// Grayscale of a 3-channel image, packed: luma of pixel i goes to byte i. Forwards is safe:
/// byte i belongs to pixel i / 3 <= i, already read. Chosen at run time as `weighted_sum` is
/// (in `blur`).
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
pub(super) fn grayscale_to_plane(px: &mut [u8]) {
    // Blocks of 64 pixels through local arrays: no aliasing between the reads and the writes, so
    // the compiler vectorises the arithmetic (2x over the plain in-place loop).
    const BLOCK: usize = 64;
    let pixels = px.len() / 3;
    let mut rgb = [0u8; 3 * BLOCK];
    let mut luma = [0u8; BLOCK];
    let mut start = 0;
    while start < pixels {
        let n = BLOCK.min(pixels - start);
        rgb[..3 * n].copy_from_slice(&px[3 * start..3 * (start + n)]);
        for (l, p) in luma.iter_mut().zip(rgb.chunks_exact(3)) {
            let (r, g, b) = (p[0] as u32, p[1] as u32, p[2] as u32);
            *l = ((299 * r + 587 * g + 114 * b + 500) / 1000) as u8;
        }
        // Byte i belongs to pixel i / 3 <= i: every byte written here was already read.
        px[start..start + n].copy_from_slice(&luma[..n]);
        start += n;
    }
}

pub(super) fn apply_lut(px: &mut [u8], channels: usize, lut: &[u8; 256]) {
    if channels == 4 {
        for p in px.chunks_exact_mut(4) {
            p[0] = lut[p[0] as usize];
            p[1] = lut[p[1] as usize];
            p[2] = lut[p[2] as usize];
        }
    } else if channels == 2 {
        for p in px.chunks_exact_mut(2) {
            p[0] = lut[p[0] as usize];
        }
    } else {
        for v in px.iter_mut() {
            *v = lut[*v as usize];
        }
    }
}

/// Grayscale in place, written to R, G and B (alpha left alone). Chosen at run time as
/// `weighted_sum` is (in `blur`).
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
pub(super) fn grayscale(px: &mut [u8], channels: usize) {
    if channels < 3 {
        return;
    }
    for p in px.chunks_exact_mut(channels) {
        let l = (299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000;
        let l = l as u8;
        p[0] = l;
        p[1] = l;
        p[2] = l;
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::test_support::run;
    use crate::ops::{OpChain, Scratch};
    use ndarray::Array3;

    #[test]
    fn grayscale_matches_hand_computed_luma() {
        // (299*200 + 587*100 + 114*50 + 500) / 1000 = (59800 + 58700 + 5700 + 500) / 1000 = 124
        // (299*255 + 587*0 + 114*0 + 500) / 1000 = 76745 / 1000 = 76
        // (299*10 + 587*20 + 114*30 + 500) / 1000 = (2990 + 11740 + 3420 + 500) / 1000 = 18
        let mut img =
            Array3::from_shape_vec((1, 3, 3), vec![200, 100, 50, 255, 0, 0, 10, 20, 30]).unwrap();
        run("grayscale", &mut img);
        assert_eq!(
            img.into_raw_vec_and_offset().0,
            vec![124, 124, 124, 76, 76, 76, 18, 18, 18]
        );
    }

    #[test]
    fn grayscale_keeps_alpha() {
        let mut img = Array3::from_shape_vec((1, 1, 4), vec![0, 255, 0, 77]).unwrap();
        run("grayscale", &mut img);
        // 587*255 + 500 = 150185 -> 150
        assert_eq!(img.into_raw_vec_and_offset().0, vec![150, 150, 150, 77]);
    }

    #[test]
    fn invert_is_255_minus_v() {
        let mut img = Array3::from_shape_vec((1, 2, 3), vec![0, 1, 128, 200, 254, 255]).unwrap();
        run("invert", &mut img);
        assert_eq!(
            img.into_raw_vec_and_offset().0,
            vec![255, 254, 127, 55, 1, 0]
        );
    }

    #[test]
    fn point_ops_match_formulas_and_fold_into_one_pass() {
        let chain = OpChain::parse("scale:2,contrast:1.5,threshold:100,invert").unwrap();
        assert_eq!(chain.passes(), 1);
        let mut img = Array3::from_shape_vec((1, 1, 3), vec![10, 50, 90]).unwrap();
        chain.apply(img.view_mut(), &mut Scratch::default());
        // scale:2 -> 20, 100, 180; contrast 1.5 -> (20-128)*1.5+128 = -34 -> 0, 86, 206;
        // threshold 100 -> 0, 0, 255; invert -> 255, 255, 0
        assert_eq!(img.into_raw_vec_and_offset().0, vec![255, 255, 0]);
    }

    #[test]
    fn scale_saturates_and_gamma_matches_formula() {
        let mut img = Array3::from_shape_vec((1, 1, 3), vec![100, 128, 200]).unwrap();
        run("scale:2", &mut img);
        assert_eq!(img.as_slice().unwrap(), &[200, 255, 255]);
        let mut img = Array3::from_shape_vec((1, 1, 3), vec![0, 64, 255]).unwrap();
        run("gamma:2", &mut img);
        // 255 * (64/255)^(1/2) = 127.75... -> 128
        assert_eq!(img.as_slice().unwrap(), &[0, 128, 255]);
    }
}
