//! The batch assembly against what it promises: crops inside their image for any shape and seed,
//! the same (seed, epoch, index) the same box and a new epoch another, flips and normalisation
//! exact against the same arithmetic written out here, and refusals that name the problem.

use shmpipe_augment::crop::{centre_crop, random_resized_crop};
use shmpipe_augment::rng::Stream;
use shmpipe_augment::{batch, plan, Augment, Mode, Out, Source};

fn train(size: u32) -> Augment {
    Augment {
        size: (size, size),
        mode: Mode::RandomResizedCrop {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        },
        flip: 0.5,
        filter: shmpipe_augment::Filter::Lanczos3,
        normalize: None,
        seed: 7,
    }
}

#[test]
fn every_crop_lies_inside_its_image_whatever_the_shape_and_seed() {
    let shapes = [
        (1, 1),
        (1, 500),
        (500, 1),
        (2, 3),
        (224, 224),
        (375, 500),
        (4000, 30),
    ];
    for &(h, w) in &shapes {
        for index in 0..300u64 {
            for (scale, ratio) in [((0.08, 1.0), (0.75, 4.0 / 3.0)), ((0.9, 1.0), (0.1, 10.0))] {
                let mut rng = Stream::new(3, 1, index);
                let b = random_resized_crop(&mut rng, (h, w), scale, ratio);
                assert!(b.height >= 1 && b.width >= 1, "{b:?} of {h}x{w}");
                assert!(
                    b.top + b.height <= h && b.left + b.width <= w,
                    "{b:?} of {h}x{w}"
                );
            }
        }
        let b = centre_crop((h, w), (224, 224), 0.875);
        assert!(
            b.top + b.height <= h && b.left + b.width <= w,
            "{b:?} of {h}x{w}"
        );
    }
}

#[test]
fn a_seed_epoch_and_index_give_one_box_and_each_epoch_another() {
    let aug = train(64);
    let shape = (375, 500);
    for index in 0..50 {
        assert_eq!(plan(&aug, 3, index, shape), plan(&aug, 3, index, shape));
    }
    let boxes = |epoch| {
        (0..50)
            .map(|i| plan(&aug, epoch, i, shape))
            .collect::<Vec<_>>()
    };
    let (e0, e1) = (boxes(0), boxes(1));
    let same = e0.iter().zip(&e1).filter(|(a, b)| a == b).count();
    assert!(
        same <= 1,
        "{same} of 50 images got the same crop in two epochs"
    );
    let flipped = e0.iter().filter(|m| m.flipped).count();
    assert!(
        (10..=40).contains(&flipped),
        "{flipped} of 50 flipped at p = 0.5"
    );
    // The centred crop draws nothing for its box: the same in every epoch.
    let val = Augment {
        mode: Mode::Centre { fraction: 0.875 },
        flip: 0.0,
        ..aug
    };
    assert_eq!(plan(&val, 0, 4, shape), plan(&val, 9, 4, shape));
    assert_eq!(
        plan(&val, 0, 4, shape).crop,
        centre_crop(shape, (64, 64), 0.875)
    );
}

/// An image whose pixels tell where they come from.
fn image(h: u32, w: u32, c: u32, salt: u32) -> Vec<u8> {
    (0..h * w * c)
        .map(|i| ((i / c) * 7 + (i % c) * 50 + salt) as u8)
        .collect()
}

#[test]
fn flips_and_normalisation_are_exact_and_the_uint8_batch_is_the_resampled_crop() {
    let (h, w, c) = (60u32, 80u32, 3u32);
    let pixels: Vec<Vec<u8>> = (0..6).map(|k| image(h, w, c, k * 11)).collect();
    let sources: Vec<Source> = pixels
        .iter()
        .enumerate()
        .map(|(k, p)| Source {
            pixels: p,
            height: h,
            width: w,
            index: 100 + k as u64,
        })
        .collect();
    let aug = train(16);
    let per = 16 * 16 * 3;
    let mut bytes = vec![0u8; sources.len() * per];
    let made = batch(&sources, c, &aug, 2, Out::U8(&mut bytes), 3).unwrap();
    let mean = [0.485f32, 0.456, 0.406, 0.0];
    let std = [0.229f32, 0.224, 0.225, 1.0];
    let normalised = Augment {
        normalize: Some((mean, std)),
        ..aug
    };
    let mut floats = vec![0f32; sources.len() * per];
    let again = batch(&sources, c, &normalised, 2, Out::F32(&mut floats), 2).unwrap();
    assert_eq!(
        made, again,
        "the boxes do not depend on the threads or the output"
    );
    assert!(made.iter().any(|m| m.flipped) && made.iter().any(|m| !m.flipped));
    for (k, (s, m)) in sources.iter().zip(&made).enumerate() {
        // The same crop resampled alone, unflipped, through the resampler itself.
        let b = m.crop;
        let mut alone = vec![0u8; per];
        let region = shmpipe_resample::Region::Box {
            left: b.left.into(),
            top: b.top.into(),
            width: b.width.into(),
            height: b.height.into(),
        };
        shmpipe_resample::resample(s.pixels, (w, h), c, region, &mut alone, (16, 16)).unwrap();
        let got = &bytes[k * per..(k + 1) * per];
        for y in 0..16 {
            for x in 0..16 {
                let from = if m.flipped { 15 - x } else { x };
                for ch in 0..3 {
                    let v = alone[(y * 16 + from) * 3 + ch];
                    assert_eq!(got[(y * 16 + x) * 3 + ch], v, "item {k} ({y}, {x}, {ch})");
                    let f = floats[k * per + ch * 256 + y * 16 + x];
                    assert_eq!(f, (f32::from(v) / 255.0 - mean[ch]) / std[ch]);
                }
            }
        }
    }
}

/// An RGB image of `height x width` as a batch's source, image `index` of its dataset.
fn source(pixels: &[u8], height: u32, width: u32, index: u64) -> Source<'_> {
    Source {
        pixels,
        height,
        width,
        index,
    }
}

#[test]
fn the_filter_asked_for_is_the_one_used() {
    let pixels = image(40, 50, 3, 9);
    let source = source(&pixels, 40, 50, 2);
    for filter in [
        shmpipe_augment::Filter::Bilinear,
        shmpipe_augment::Filter::Lanczos3,
    ] {
        let aug = Augment {
            filter,
            ..train(12)
        };
        let mut out = vec![0u8; 12 * 12 * 3];
        let made = batch(&[source], 3, &aug, 1, Out::U8(&mut out), 1).unwrap();
        let b = made[0].crop;
        let mut alone = vec![0u8; 12 * 12 * 3];
        let region = shmpipe_resample::Region::Box {
            left: b.left.into(),
            top: b.top.into(),
            width: b.width.into(),
            height: b.height.into(),
        };
        shmpipe_resample::resample_with(filter, &pixels, (50, 40), 3, region, &mut alone, (12, 12))
            .unwrap();
        if made[0].flipped {
            for row in alone.chunks_exact_mut(36) {
                let flipped: Vec<u8> = row.chunks_exact(3).rev().flatten().copied().collect();
                row.copy_from_slice(&flipped);
            }
        }
        assert_eq!(out, alone, "{filter:?}");
    }
}

#[test]
fn a_wrong_batch_array_or_image_is_refused_naming_it() {
    let pixels = image(10, 10, 3, 0);
    let source = source(&pixels, 10, 10, 5);
    let aug = train(4);
    let mut small = vec![0u8; 10];
    let err = batch(&[source], 3, &aug, 0, Out::U8(&mut small), 1).unwrap_err();
    assert!(err.contains("holds 10 values"), "{err}");
    let short = Source {
        pixels: &pixels[..20],
        ..source
    };
    let mut out = vec![0u8; 48];
    let err = batch(&[short], 3, &aug, 0, Out::U8(&mut out), 1).unwrap_err();
    assert!(err.contains("image 5"), "{err}");
    let mut floats = vec![0f32; 48];
    let err = batch(&[source], 3, &aug, 0, Out::F32(&mut floats), 1).unwrap_err();
    assert!(err.contains("type the normalisation gives"), "{err}");
}
