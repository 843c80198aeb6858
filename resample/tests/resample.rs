//! The resampler through its one public function.

use shmpipe_resample::{resample, Region};

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
