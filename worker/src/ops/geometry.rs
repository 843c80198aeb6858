//! Ops that move pixels without changing them: flips.
//!
//! This file must never change a pixel's value, only where it is.

use ndarray::{s, ArrayViewMut3, Axis, Zip};

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
    use ndarray::Array3;

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
