//! Ops that move pixels without changing them: flips, crops and quarter turns.
//!
//! This file must never change a pixel's value, only where it is. The flips work in place on a
//! view; a crop or a turn makes an image of another shape, so it copies from one buffer into
//! another (`src` and `dst`, `channels` bytes a pixel, rows packed).

use ndarray::{s, ArrayViewMut3, Axis, Zip};

/// `crop:X,Y,W,H` (or `crop:WxH+X+Y`): the `width x height` pixels whose top-left corner is at
/// column `x`, row `y`; `crop:WxH` (no corner): centred, the odd pixel left on the right and at
/// the bottom. A box reaching past the image keeps the part inside it, as ImageMagick's `-crop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    /// The top-left corner `(x, y)`; None: centred.
    pub at: Option<(u32, u32)>,
    pub width: u32,
    pub height: u32,
}

impl CropBox {
    /// The part of an image of `width x height` this box keeps, `(x, y, width, height)`, or
    /// None when none of it lies inside the image.
    pub fn within(&self, width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
        let (bw, bh) = (self.width as usize, self.height as usize);
        let (x, y) = match self.at {
            Some((x, y)) => (x as usize, y as usize),
            None => (width.saturating_sub(bw) / 2, height.saturating_sub(bh) / 2),
        };
        let (w, h) = (
            bw.min(width.saturating_sub(x)),
            bh.min(height.saturating_sub(y)),
        );
        (w > 0 && h > 0).then_some((x, y, w, h))
    }
}

impl std::fmt::Display for CropBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some((x, y)) => write!(f, "crop:{x},{y},{},{}", self.width, self.height),
            None => write!(f, "crop:{}x{}", self.width, self.height),
        }
    }
}

/// Copies the `(x, y, w, h)` part of `src` (`width` pixels a row) into `dst` (`w x h`).
pub(super) fn crop(
    src: &[u8],
    width: usize,
    channels: usize,
    (x, y, w, h): (usize, usize, usize, usize),
    dst: &mut [u8],
) {
    let (row, out_row) = (width * channels, w * channels);
    for (r, out) in dst.chunks_exact_mut(out_row).take(h).enumerate() {
        let at = (y + r) * row + x * channels;
        out.copy_from_slice(&src[at..at + out_row]);
    }
}

/// Turns `src` (`height x width`) clockwise by `degrees` (90, 180 or 270) into `dst`, which is
/// `width x height` for a quarter turn. Copied in tiles so both sides stay in cache.
pub(super) fn rotate(
    src: &[u8],
    (height, width): (usize, usize),
    channels: usize,
    degrees: u16,
    dst: &mut [u8],
) {
    let (h, w) = (height, width);
    match degrees {
        90 => turn(src, (h, w), channels, dst, h, |y, x| (x, h - 1 - y)),
        180 => turn(src, (h, w), channels, dst, w, |y, x| (h - 1 - y, w - 1 - x)),
        270 => turn(src, (h, w), channels, dst, h, |y, x| (w - 1 - x, y)),
        _ => unreachable!("parse accepts 90, 180 and 270 only"),
    }
}

/// Copies each pixel (y, x) of `src` to `to(y, x)` in `dst` (`out_width` pixels a row), tile by
/// tile.
fn turn(
    src: &[u8],
    (height, width): (usize, usize),
    c: usize,
    dst: &mut [u8],
    out_width: usize,
    to: impl Fn(usize, usize) -> (usize, usize),
) {
    const TILE: usize = 64;
    for ty in (0..height).step_by(TILE) {
        for tx in (0..width).step_by(TILE) {
            for y in ty..(ty + TILE).min(height) {
                for x in tx..(tx + TILE).min(width) {
                    let (oy, ox) = to(y, x);
                    let (from, at) = ((y * width + x) * c, (oy * out_width + ox) * c);
                    dst[at..at + c].copy_from_slice(&src[from..from + c]);
                }
            }
        }
    }
}

pub(super) fn flip_h(mut img: ArrayViewMut3<'_, u8>) {
    let w = img.dim().1;
    for mut row in img.outer_iter_mut() {
        let (mut left, right) = row.view_mut().split_at(Axis(0), w / 2);
        let mut right = right.slice_move(s![..;-1, ..]);
        let right = right.slice_mut(s![..w / 2, ..]);
        Zip::from(&mut left).and(right).for_each(std::mem::swap);
    }
}

pub(super) fn flip_v(img: ArrayViewMut3<'_, u8>) {
    let h = img.dim().0;
    let (top, bottom) = img.split_at(Axis(0), h / 2);
    let bottom = bottom.slice_move(s![..;-1, .., ..]);
    let bottom = bottom.slice_move(s![..h / 2, .., ..]);
    Zip::from(top).and(bottom).for_each(std::mem::swap);
}

#[cfg(test)]
mod tests {
    use crate::ops::test_support::run;
    use crate::ops::{OpChain, Scratch};
    use ndarray::Array3;

    /// The chain `ops` on `img`: the result's pixels and its (height, width).
    fn reshaped(ops: &str, img: &Array3<u8>) -> Result<(Vec<u8>, (usize, usize)), String> {
        let mut slot = img.clone();
        let mut scratch = Scratch::default();
        let ran = OpChain::parse(ops)
            .unwrap()
            .run(slot.view_mut(), &mut scratch)?;
        let c = img.dim().2;
        let pixels = match ran.frame {
            Some(k) => scratch.frame(k).to_vec(),
            None => slot.into_raw_vec_and_offset().0,
        };
        assert_eq!(pixels.len(), ran.height * ran.width * c);
        Ok((pixels, (ran.height, ran.width)))
    }

    #[test]
    fn quarter_turns_move_each_pixel_where_the_formula_says() {
        let (h, w, c) = (5, 7, 3);
        let img = Array3::from_shape_fn((h, w, c), |(y, x, ch)| (y * 50 + x * 7 + ch) as u8);
        let (r90, dims) = reshaped("rotate:90", &img).unwrap();
        assert_eq!(dims, (w, h));
        let (r180, _) = reshaped("rotate:180", &img).unwrap();
        let (r270, dims) = reshaped("rotate:270", &img).unwrap();
        assert_eq!(dims, (w, h));
        for (y, x, ch) in
            (0..h).flat_map(|y| (0..w).flat_map(move |x| (0..c).map(move |k| (y, x, k))))
        {
            let v = img[[y, x, ch]];
            assert_eq!(r90[(x * h + (h - 1 - y)) * c + ch], v);
            assert_eq!(r180[((h - 1 - y) * w + (w - 1 - x)) * c + ch], v);
            assert_eq!(r270[((w - 1 - x) * h + y) * c + ch], v);
        }
        // Four quarter turns, and a quarter turn each way, give the image back.
        let (full, dims) = reshaped("rotate:90,rotate:90,rotate:90,rotate:90", &img).unwrap();
        assert_eq!(
            (full, dims),
            (img.clone().into_raw_vec_and_offset().0, (h, w))
        );
        let (back, _) = reshaped("rotate:90,invert,rotate:270,invert", &img).unwrap();
        assert_eq!(back, img.clone().into_raw_vec_and_offset().0);
    }

    #[test]
    fn a_crop_keeps_the_part_of_its_box_inside_the_image() {
        let img = Array3::from_shape_fn((6, 8, 2), |(y, x, ch)| (y * 40 + x * 4 + ch) as u8);
        let window = |x: usize, y: usize, w: usize, h: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for yy in y..y + h {
                for xx in x..x + w {
                    out.extend_from_slice(&[img[[yy, xx, 0]], img[[yy, xx, 1]]]);
                }
            }
            out
        };
        assert_eq!(
            reshaped("crop:2,1,3,4", &img).unwrap(),
            (window(2, 1, 3, 4), (4, 3))
        );
        assert_eq!(
            reshaped("crop:3x4+2+1", &img).unwrap(),
            (window(2, 1, 3, 4), (4, 3))
        );
        // Centred: (8 - 3) / 2 = 2 columns left of it, (6 - 3) / 2 = 1 row above.
        assert_eq!(
            reshaped("crop:3x3", &img).unwrap(),
            (window(2, 1, 3, 3), (3, 3))
        );
        // Past the edge: the part inside; larger than the image, centred: the whole image.
        assert_eq!(
            reshaped("crop:6,4,10,10", &img).unwrap(),
            (window(6, 4, 2, 2), (2, 2))
        );
        assert_eq!(
            reshaped("crop:100x100", &img).unwrap(),
            (window(0, 0, 8, 6), (6, 8))
        );
        let outside = reshaped("crop:8,0,2,2", &img).unwrap_err();
        assert!(
            outside.contains("crop:8,0,2,2 lies outside the 8x6 image"),
            "{outside}"
        );
    }

    #[test]
    fn a_gray_plane_is_turned_and_cropped_as_one_channel() {
        let img = Array3::from_shape_fn((9, 4, 3), |(y, x, ch)| (y * 20 + x * 3 + ch * 60) as u8);
        let mut slot = img.clone();
        let mut scratch = Scratch::default();
        let chain = OpChain::parse("grayscale,rotate:90,crop:1,1,5,3").unwrap();
        let ran = chain.run(slot.view_mut(), &mut scratch).unwrap();
        assert_eq!((ran.height, ran.width), (3, 5));
        assert_eq!(ran.layout, crate::ops::Layout::GrayPlane);
        let plane = scratch.frame(ran.frame.unwrap()).to_vec();
        assert_eq!(plane.len(), 3 * 5 * 3, "a frame holds the slot's channels");
        let mut gray = img.clone();
        run("grayscale", &mut gray);
        for y in 0..3 {
            for x in 0..5 {
                // (y, x) of the crop is (y + 1, x + 1) of the turned image, whose (ty, tx) is
                // (H - 1 - tx, ty) of the source.
                let (ty, tx) = (y + 1, x + 1);
                assert_eq!(plane[y * 5 + x], gray[[9 - 1 - tx, ty, 0]]);
            }
        }
    }

    #[test]
    fn an_image_over_the_pixel_limit_is_refused_before_it_is_made() {
        let mut img = Array3::<u8>::zeros((4, 4, 3));
        let mut chain = OpChain::parse("resize:20000x20000:stretch").unwrap();
        chain.limit_pixels(1_000_000);
        let err = chain
            .run(img.view_mut(), &mut Scratch::default())
            .unwrap_err();
        assert!(
            err.contains("20000x20000") && err.contains("--max-pixels"),
            "{err}"
        );
    }

    #[test]
    fn flips_twice_are_identity_and_once_mirror() {
        let img = Array3::from_shape_fn((5, 7, 3), |(y, x, c)| (y * 50 + x * 7 + c) as u8);
        for op in ["flip-h", "flip-v"] {
            let mut once = img.clone();
            run(op, &mut once);
            assert_ne!(once, img);
            let mut twice = once.clone();
            run(op, &mut twice);
            assert_eq!(twice, img, "{op}");
        }
        let mut h = img.clone();
        run("flip-h", &mut h);
        assert_eq!(h[[2, 0, 1]], img[[2, 6, 1]]);
        let mut v = img.clone();
        run("flip-v", &mut v);
        assert_eq!(v[[0, 3, 2]], img[[4, 3, 2]]);
    }
}
