//! Crop, rotate and resize inside `--ops`, through the binary: each against the same operation
//! computed independently (the `image` crate's crop, quarter turns and Lanczos3), in the order
//! given, on RGB, RGBA and gray images, on the gray-plane path of a colour JPEG, in copy mode;
//! a crop outside one image fails that image alone; the lists that cannot work are refused.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, GenericImageView, GrayImage, RgbImage, RgbaImage};

use crate::util::{os, run, stderr};

/// in/rgb.png (40 x 30), in/rgba.png (33 x 21), in/gray.png (17 x 25), in/photo.jpg (48 x 32).
fn inputs(root: &Path) -> PathBuf {
    let input = root.join("in");
    std::fs::create_dir_all(&input).unwrap();
    RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x * y) % 251) as u8])
    })
    .save(input.join("rgb.png"))
    .unwrap();
    RgbaImage::from_fn(33, 21, |x, y| {
        image::Rgba([(x * 7) as u8, (y * 11) as u8, 90, (x * y % 256) as u8])
    })
    .save(input.join("rgba.png"))
    .unwrap();
    GrayImage::from_fn(17, 25, |x, y| image::Luma([(x * 13 + y * 5) as u8]))
        .save(input.join("gray.png"))
        .unwrap();
    RgbImage::from_fn(48, 32, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
    })
    .save(input.join("photo.jpg"))
    .unwrap();
    input
}

/// Runs `run INPUT -o OUT --format png --ops OPS EXTRA...`; asserts it succeeded.
fn run_ops(input: &Path, out: &Path, ops: &str, extra: &[&str]) {
    let mut args = vec![
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--format"),
        os("png"),
        os("--ops"),
        os(ops),
        os("-j"),
        os("2"),
        os("-q"),
    ];
    args.extend(extra.iter().map(|s| os(s)));
    let done = run(&args);
    assert_eq!(done.status.code(), Some(0), "{ops}: {}", stderr(&done));
}

/// What a run said, on stdout (its summary names each failed image) and stderr.
fn said(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(out)
}

fn open(path: &Path) -> DynamicImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The image as read from `in/NAME`, in the layout its output keeps.
fn source(input: &Path, name: &str) -> DynamicImage {
    open(&input.join(name))
}

/// What an op list should make of an image, computed with the `image` crate.
type Expected = fn(&DynamicImage) -> DynamicImage;

#[test]
fn crop_and_rotate_give_what_the_image_crate_gives_in_the_order_written() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let cases: [(&str, Expected); 5] = [
        ("crop:3,4,20,10,rotate:90", |i| {
            i.crop_imm(3, 4, 20, 10).rotate90()
        }),
        ("rotate:90,crop:3,4,20,10", |i| {
            i.rotate90().crop_imm(3, 4, 20, 10)
        }),
        ("rotate:180", |i| i.rotate180()),
        // Centred: the overflow split, the odd pixel to the right and the bottom.
        ("rotate:270,crop:8x9", |i| {
            let t = i.rotate270();
            let (w, h) = (t.width(), t.height());
            t.crop_imm((w - 8) / 2, (h - 9) / 2, 8, 9)
        }),
        // Past the edge: what lies inside; flip and invert keep working on the new shape.
        ("crop:10x10+12+15,flip-h,invert", |i| {
            let mut c = i.crop_imm(12, 15, 10, 10).fliph();
            c.invert();
            c
        }),
    ];
    for (n, (ops, expected)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("out{n}"));
        run_ops(&input, &out, ops, &[]);
        for name in ["rgb.png", "rgba.png", "gray.png"] {
            let want = expected(&source(&input, name));
            let got = open(&out.join(name));
            assert_eq!(got.color(), want.color(), "{ops} on {name}");
            assert_eq!(got.dimensions(), want.dimensions(), "{ops} on {name}");
            assert_eq!(got.as_bytes(), want.as_bytes(), "{ops} on {name}");
        }
    }
}

#[test]
fn resize_in_the_chain_is_the_resize_flag_at_another_step() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let (chain, flag) = (tmp.path().join("chain"), tmp.path().join("flag"));
    // A resize first in the chain resamples what --resize would have: the same pixels.
    run_ops(&input, &chain, "resize:20x", &[]);
    run_ops(&input, &flag, "", &["--resize", "20x"]);
    for name in ["rgb.png", "rgba.png", "gray.png"] {
        let (a, b) = (open(&chain.join(name)), open(&flag.join(name)));
        assert_eq!(a.dimensions().0, 20, "{name}");
        assert_eq!(
            (a.dimensions(), a.as_bytes()),
            (b.dimensions(), b.as_bytes()),
            "{name}"
        );
    }
    // After a crop, the resize sees the cropped image: against the image crate's Lanczos3 on the
    // same crop (another implementation, so close rather than equal).
    let out = tmp.path().join("cropped");
    run_ops(&input, &out, "crop:4,2,30,24,resize:15x12:stretch", &[]);
    let want = imageops::resize(
        &source(&input, "rgb.png").crop_imm(4, 2, 30, 24).to_rgb8(),
        15,
        12,
        FilterType::Lanczos3,
    );
    let got = open(&out.join("rgb.png")).to_rgb8();
    assert_eq!(got.dimensions(), (15, 12));
    let diff: u64 = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| a.abs_diff(*b) as u64)
        .sum();
    let mean = diff as f64 / got.as_raw().len() as f64;
    assert!(
        mean < 2.0,
        "mean difference {mean} from the image crate's Lanczos3"
    );
    // The shorter side and cover forms give the sizes they promise.
    let out = tmp.path().join("forms");
    run_ops(&input, &out, "rotate:90,resize:12,resize:10x10:cover", &[]);
    assert_eq!(open(&out.join("rgb.png")).dimensions(), (10, 10));
    let out = tmp.path().join("shorter");
    run_ops(&input, &out, "rotate:90,resize:12", &[]);
    // 40 x 30 turned is 30 x 40: the shorter side 30 becomes 12, the other 16.
    assert_eq!(open(&out.join("rgb.png")).dimensions(), (12, 16));
}

#[test]
fn the_gray_plane_path_and_copy_mode_reshape_as_the_general_path() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    // A colour JPEG under a chain starting with grayscale is decoded as its luma plane alone.
    let (gray, turned) = (tmp.path().join("gray"), tmp.path().join("turned"));
    run_ops(&input, &gray, "grayscale", &[]);
    run_ops(&input, &turned, "grayscale,rotate:90,crop:2,3,20,30", &[]);
    let want = open(&gray.join("photo.png"))
        .rotate90()
        .crop_imm(2, 3, 20, 30);
    let got = open(&turned.join("photo.png"));
    assert_eq!(got.color(), image::ColorType::L8);
    assert_eq!(
        (got.dimensions(), got.as_bytes()),
        (want.dimensions(), want.as_bytes())
    );
    // --rgb expands the turned plane to three channels.
    let rgb = tmp.path().join("rgb");
    run_ops(
        &input,
        &rgb,
        "grayscale,rotate:90,crop:2,3,20,30",
        &["--rgb"],
    );
    assert_eq!(open(&rgb.join("photo.png")).to_luma8(), want.to_luma8());
    assert_eq!(open(&rgb.join("photo.png")).color(), image::ColorType::Rgb8);
    // Copy mode (each worker's private copy) reshapes as the shared block does.
    let copy = tmp.path().join("copy");
    run_ops(
        &input,
        &copy,
        "grayscale,rotate:90,crop:2,3,20,30",
        &["--mode", "copy"],
    );
    for name in ["rgb.png", "rgba.png", "gray.png", "photo.png"] {
        assert_eq!(
            open(&copy.join(name)).as_bytes(),
            open(&turned.join(name)).as_bytes(),
            "{name}"
        );
    }
}

#[test]
fn a_crop_outside_one_image_fails_that_image_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let out = tmp.path().join("out");
    // gray.png is 17 x 25: the box starts right of it. The others hold part of it.
    let done = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--ops"),
        os("crop:18,0,5,5"),
    ]);
    let err = said(&done);
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(
        err.contains("gray.png") && err.contains("crop:18,0,5,5 lies outside the 17x25 image"),
        "{err}"
    );
    let written = crate::util::files_under(&out);
    let names: Vec<_> = written
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["photo.jpg", "rgb.png", "rgba.png"]);
    assert_eq!(open(&out.join("rgb.png")).dimensions(), (5, 5));
    // An image a resize would make over --max-pixels fails, naming the limit.
    let out = tmp.path().join("big");
    let done = run(&[
        os("run"),
        input.join("rgb.png").as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--ops"),
        os("resize:5000x5000:stretch"),
        os("--max-pixels"),
        os("1000000"),
    ]);
    let err = said(&done);
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(
        err.contains("5000x5000") && err.contains("--max-pixels"),
        "{err}"
    );
    assert!(crate::util::files_under(&out).is_empty());
}

#[test]
fn lists_that_cannot_work_are_refused_before_any_block() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let refused = |args: &[&str], says: &[&str]| {
        let mut all = vec![os("run"), input.as_os_str()];
        all.extend(args.iter().map(|a| os(a)));
        let done = run(&all);
        let err = stderr(&done);
        assert_eq!(done.status.code(), Some(2), "{args:?}: {err}");
        for s in says {
            assert!(err.contains(s), "{args:?}: {err}");
        }
    };
    refused(&["--ops", "rotate:45"], &["90, 180 or 270"]);
    refused(&["--ops", "resise:10"], &["did you mean resize"]);
    refused(&["--ops", "crop:1,2,3"], &["X,Y,W,H"]);
    refused(&["--ops", "resize:256:cover"], &["--fit inside"]);
    refused(
        &["--ops", "rotate:90", "--keep", "geo"],
        &["--keep geo", "rotate:90"],
    );
    let apply = run(&[os("apply"), os("nosuch"), os("--ops"), os("crop:5x5")]);
    let err = stderr(&apply);
    assert_eq!(apply.status.code(), Some(2), "{err}");
    assert!(err.contains("crop:5x5 changes an image's size"), "{err}");
}
