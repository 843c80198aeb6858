//! `--resize` as users know it, through the binary: each form's output sizes (the aspect ratio
//! kept and the box fitted by default, `Wx`, `xH`, `--no-enlarge`, the uniform fits), odd shapes,
//! one-pixel-wide images, EXIF-rotated photos (the box applies to the turned image), and the
//! forms that are refused.

use std::path::Path;

use crate::util::{assets, os, run, stderr};
use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, RgbImage};

/// An image whose pixels vary smoothly, so any resampling gives plausible pixels.
fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    })
}

/// The input folder: odd aspect ratios, one-pixel-wide and one-pixel-high images, a small
/// image, and a JPEG stored 300 wide and 200 high whose EXIF says to turn it a quarter (shown
/// 200 x 300).
fn inputs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, w, h) in [
        ("wide.png", 333, 101),
        ("tall.png", 101, 333),
        ("line.png", 1, 500),
        ("row.png", 500, 1),
        ("small.png", 40, 30),
    ] {
        gradient(w, h).save(dir.join(name)).unwrap();
    }
    let stored = gradient(300, 200);
    let mut jpeg = Vec::new();
    let mut encoder = JpegEncoder::new_with_quality(&mut jpeg, 90);
    encoder
        .set_exif_metadata(shmpipe_worker::codec::exif_orientation(6))
        .unwrap();
    encoder
        .write_image(stored.as_raw(), 300, 200, image::ExtendedColorType::Rgb8)
        .unwrap();
    std::fs::write(dir.join("turned.jpg"), jpeg).unwrap();
}

/// Runs `run IN -o OUT --format png ARGS` and gives each output's size by its stem.
fn sizes(input: &Path, out: &Path, extra: &[&str]) -> Vec<(String, (u32, u32))> {
    let mut args = vec![
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--format"),
        os("png"),
        os("-q"),
    ];
    args.extend(extra.iter().map(|s| os(s)));
    let output = run(&args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{extra:?}: {}",
        stderr(&output)
    );
    let mut found: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, image::image_dimensions(&p).unwrap())
        })
        .collect();
    found.sort();
    found
}

fn expect(list: &[(&str, (u32, u32))]) -> Vec<(String, (u32, u32))> {
    list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

#[test]
fn every_resize_form_gives_the_sizes_users_expect() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    inputs(&input);
    let out = |k: &str| tmp.path().join(k);
    // The box: aspect kept, fitted inside, the limiting side on the box exactly, the other
    // rounded as libvips' thumbnail rounds it; small images are enlarged; a one-pixel side
    // stays one pixel.
    assert_eq!(
        sizes(&input, &out("box"), &["--resize", "100x100"]),
        expect(&[
            ("line", (1, 100)),
            ("row", (100, 1)),
            ("small", (100, 75)),
            ("tall", (30, 100)),
            ("turned", (67, 100)), // shown 200 x 300: the box applies to the turned image
            ("wide", (100, 30)),
        ])
    );
    // Width only: the height follows.
    assert_eq!(
        sizes(&input, &out("width"), &["--resize", "50x"]),
        expect(&[
            ("line", (50, 25000)),
            ("row", (50, 1)),
            ("small", (50, 38)), // 37.5 rounds up
            ("tall", (50, 165)),
            ("turned", (50, 75)),
            ("wide", (50, 15)),
        ])
    );
    // Height only.
    assert_eq!(
        sizes(&input, &out("height"), &["--resize", "x60"]),
        expect(&[
            ("line", (1, 60)),
            ("row", (30000, 60)),
            ("small", (80, 60)),
            ("tall", (18, 60)),
            ("turned", (40, 60)),
            ("wide", (198, 60)),
        ])
    );
    // Shrink only: what is inside the box keeps its size.
    assert_eq!(
        sizes(
            &input,
            &out("shrink"),
            &["--resize", "100x100", "--no-enlarge"]
        ),
        expect(&[
            ("line", (1, 100)),
            ("row", (100, 1)),
            ("small", (40, 30)),
            ("tall", (30, 100)),
            ("turned", (67, 100)),
            ("wide", (100, 30)),
        ])
    );
    // The uniform fits: every image the box's shape, one (N, H, W, C) array.
    for fit in ["stretch", "cover", "contain"] {
        let got = sizes(&input, &out(fit), &["--resize", "64x48", "--fit", fit]);
        assert_eq!(got.len(), 6, "{fit}");
        assert!(got.iter().all(|(_, s)| *s == (64, 48)), "{fit}: {got:?}");
    }
}

#[test]
fn no_enlarge_leaves_a_small_image_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    inputs(&input);
    let out = tmp.path().join("out");
    sizes(&input, &out, &["--resize", "100x100", "--no-enlarge"]);
    let before = image::open(input.join("small.png")).unwrap().to_rgb8();
    let after = image::open(out.join("small.png")).unwrap().to_rgb8();
    assert!(before == after, "the same pixels, not resampled");
    // Without --no-enlarge it is enlarged (so the check above can fail).
    let enlarged = tmp.path().join("enlarged");
    sizes(&input, &enlarged, &["--resize", "100x100"]);
    let dims = image::image_dimensions(enlarged.join("small.png")).unwrap();
    assert_eq!(dims, (100, 75));
}

#[test]
fn a_photo_keeps_its_aspect_ratio_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(assets().join("seeding.jpg"), input.join("seeding.jpg")).unwrap();
    // 1600 x 900 into 800 x 600: 800 x 450, not stretched to 800 x 600.
    let got = sizes(&input, &tmp.path().join("out"), &["--resize", "800x600"]);
    assert_eq!(got, expect(&[("seeding", (800, 450))]));
}

#[test]
fn resize_forms_that_cannot_work_are_refused_naming_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    inputs(&input);
    let refused = |args: &[&str], says: &str| {
        let mut all = vec![os("run"), input.as_os_str(), os("-q")];
        all.extend(args.iter().map(|s| os(s)));
        let output = run(&all);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    };
    refused(&["--resize", "100x", "--fit", "cover"], "needs both sides");
    refused(&["--resize", "100x100>"], "--no-enlarge");
    refused(&["--resize", "x"], "no side");
    refused(&["--resize", "0x10"], "not a side");
    refused(
        &["--resize", "100x100", "--fit", "stretch", "--no-enlarge"],
        "--no-enlarge goes with --fit inside",
    );
    // load takes run's forms; one side keeps the aspect, which a fit of one shape cannot.
    let load = run(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os("never"),
        os("--resize"),
        os("100x"),
        os("--fit"),
        os("cover"),
    ]);
    assert_eq!(load.status.code(), Some(2));
    assert!(
        stderr(&load).contains("needs both sides"),
        "{}",
        stderr(&load)
    );
}

/// `--resize S`: the shorter side becomes S and the aspect ratio is kept (torchvision's
/// `Resize(S)`), EXIF-turned images as shown; with `--no-enlarge` a shorter side already at most
/// S stays. The sizes are worked out by hand: the longer side is round(longer * S / shorter).
#[test]
fn a_bare_side_sets_the_shorter_side() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    inputs(&input);
    assert_eq!(
        sizes(&input, &tmp.path().join("s"), &["--resize", "60"]),
        expect(&[
            ("line", (60, 30000)),
            ("row", (30000, 60)),
            ("small", (80, 60)),
            ("tall", (60, 198)),  // 333 * 60 / 101 = 197.8
            ("turned", (60, 90)), // shown 200 x 300
            ("wide", (198, 60)),
        ])
    );
    assert_eq!(
        sizes(
            &input,
            &tmp.path().join("shrink"),
            &["--resize", "60", "--no-enlarge"]
        ),
        expect(&[
            ("line", (1, 500)),
            ("row", (500, 1)),
            ("small", (40, 30)),
            ("tall", (60, 198)),
            ("turned", (60, 90)),
            ("wide", (198, 60)),
        ])
    );
    // Only `inside` keeps the aspect ratio; 0 is no side.
    for refused in [
        &["--resize", "60", "--fit", "cover"][..],
        &["--resize", "0"][..],
    ] {
        let mut args = vec![os("run"), input.as_os_str()];
        args.extend(refused.iter().map(|a| os(a)));
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{refused:?}");
        assert!(
            stderr(&out).contains("--resize") || stderr(&out).contains("side"),
            "{refused:?}: {}",
            stderr(&out)
        );
    }
}

/// `load` fits as `run` does: by default each image keeps its aspect ratio inside the box, so the
/// dataset holds the pixels of `run`'s outputs; `--fit stretch` makes every image the box.
#[test]
fn load_keeps_the_aspect_ratio_by_default_as_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    inputs(&input);
    let ran = sizes(&input, &tmp.path().join("out"), &["--resize", "100x100"]);
    let ran_bytes: u64 = ran.iter().map(|(_, (w, h))| u64::from(w * h * 3)).sum();
    let planned = |extra: &[&str]| {
        let mut args = vec![
            os("load"),
            input.as_os_str(),
            os("--name"),
            os("fitdefault"),
            os("--resize"),
            os("100x100"),
            os("--dry-run"),
            os("--json"),
        ];
        args.extend(extra.iter().map(|s| os(s)));
        let done = run(&args);
        let plan: serde_json::Value = serde_json::from_slice(&done.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", stderr(&done)));
        plan["dataset_bytes"].as_u64().expect("dataset_bytes")
    };
    assert_eq!(planned(&[]), ran_bytes);
    assert_eq!(planned(&["--fit", "stretch"]), 6 * 100 * 100 * 3);
}
