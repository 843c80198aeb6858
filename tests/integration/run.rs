//! End-to-end tests of `shmpipe run`: the real binary, real worker processes, a real block in
//! /dev/shm, real files decoded and compared.

use std::path::{Path, PathBuf};

use crate::util::{assets, files_under, os, run, stderr};
use image::{ImageFormat, RgbImage};
use shmpipe_worker::codec;
use shmpipe_worker::ops::{OpChain, Scratch};

const CHAIN: &str = "grayscale,blur:2,contrast:1.3,flip-h";

fn run_ok(input: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--json"),
    ];
    args.extend(extra.iter().map(|s| os(s)));
    let output = run(&args);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("--json prints one JSON object")
}

/// The op chain applied in this process to the decoded input, independently of the pipeline.
fn reference(input: &Path, chain: &str) -> RgbImage {
    let mut img = image::open(input).expect("decode input").to_rgb8();
    let (w, h) = img.dimensions();
    let view = ndarray::ArrayViewMut3::from_shape((h as usize, w as usize, 3), &mut img).unwrap();
    OpChain::parse(chain)
        .unwrap()
        .apply(view, &mut Scratch::default());
    img
}

/// The channels of an image as decoded: 1 gray, 2 gray and alpha, 3 colour, 4 with alpha.
fn channels_of(path: &Path) -> u64 {
    use image::ImageDecoder;
    let decoder = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .unwrap()
        .into_decoder()
        .unwrap();
    decoder.color_type().channel_count() as u64
}

fn image_inputs(root: &Path) -> Vec<PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|p| {
            image::ImageReader::open(root.join(p))
                .and_then(|r| r.with_guessed_format())
                .is_ok_and(|r| r.format().is_some())
        })
        .collect()
}

#[test]
fn j1_and_j4_give_byte_identical_outputs_equal_to_a_single_process_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let (out1, out4) = (tmp.path().join("j1"), tmp.path().join("j4"));
    let s1 = run_ok(
        &assets(),
        &out1,
        &["--ops", CHAIN, "-j", "1", "--format", "png", "--quiet"],
    );
    let s4 = run_ok(
        &assets(),
        &out4,
        &["--ops", CHAIN, "-j", "4", "--format", "png", "--quiet"],
    );
    let inputs = image_inputs(&assets());
    assert!(inputs.len() >= 6, "assets/ holds the sample images");
    assert_eq!(s1["images_ok"], inputs.len());
    assert_eq!(s4["images_ok"], inputs.len());
    assert_eq!(s4["workers"], 4);

    let files = files_under(&out1);
    assert_eq!(files, files_under(&out4));
    assert_eq!(
        files.len(),
        inputs.len(),
        "one output per input, no temporary files left"
    );
    for rel in &inputs {
        let out_rel = codec::output_path(Path::new(""), rel, ImageFormat::Png);
        let a = std::fs::read(out1.join(&out_rel)).unwrap();
        let b = std::fs::read(out4.join(&out_rel)).unwrap();
        assert!(
            a == b,
            "{} differs between -j 1 and -j 4",
            out_rel.display()
        );
        let got = image::load_from_memory(&a).unwrap().to_rgb8();
        let want = reference(&assets().join(rel), CHAIN);
        assert_eq!(got.dimensions(), want.dimensions(), "{}", rel.display());
        if ImageFormat::from_path(rel).unwrap() == ImageFormat::Jpeg {
            // The chain starts with grayscale: a colour JPEG's stored luma is read instead.
            assert_close_to_rgb_grayscale(&got, &want, &rel.display().to_string());
        } else {
            assert!(
                got == want,
                "{}: pixels differ from the single-process chain",
                rel.display()
            );
        }
    }
}

/// A JPEG's stored luma against grayscale of its decoded RGB: the same image up to the
/// YCbCr -> RGB round trip's rounding, apart from a few pixels clamped out of gamut.
fn assert_close_to_rgb_grayscale(got: &RgbImage, want: &RgbImage, what: &str) {
    let diffs: Vec<u32> = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| a.abs_diff(*b) as u32)
        .collect();
    let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
    let over_one = diffs.iter().filter(|d| **d > 1).count() as f64 / diffs.len() as f64;
    let max = diffs.iter().max().copied().unwrap_or(0);
    assert!(
        mean < 0.1 && over_one < 0.005 && max <= 24,
        "{what}: luma decode differs from grayscale of RGB: mean {mean:.4}, \
         {:.3}% over 1, max {max}",
        over_one * 100.0
    );
}

#[test]
fn same_format_outputs_keep_relative_paths_and_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run_ok(&assets(), &a, &["--ops", "invert,sharpen", "-j", "1"]);
    run_ok(&assets(), &b, &["--ops", "invert,sharpen", "-j", "3"]);
    let inputs = image_inputs(&assets());
    assert_eq!(files_under(&a), inputs, "same relative paths, same names");
    for rel in &inputs {
        assert!(
            std::fs::read(a.join(rel)).unwrap() == std::fs::read(b.join(rel)).unwrap(),
            "{}",
            rel.display()
        );
        let (iw, ih) = image::image_dimensions(assets().join(rel)).unwrap();
        assert_eq!(image::image_dimensions(a.join(rel)).unwrap(), (iw, ih));
        assert_eq!(
            image::ImageReader::open(a.join(rel))
                .unwrap()
                .with_guessed_format()
                .unwrap()
                .format(),
            ImageFormat::from_path(rel).ok(),
            "{} keeps its format",
            rel.display()
        );
    }
}

#[test]
fn json_summary_counts_pixels_and_measures_shared_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run_ok(
        &assets(),
        &tmp.path().join("o"),
        &["--ops", "grayscale", "-j", "2"],
    );
    let inputs = image_inputs(&assets());
    let (mut pixels, mut bytes) = (0u64, 0u64);
    for p in &inputs {
        let (w, h) = image::image_dimensions(assets().join(p)).unwrap();
        pixels += w as u64 * h as u64;
        // Each image keeps its own channels.
        bytes += w as u64 * h as u64 * channels_of(&assets().join(p));
    }
    assert_eq!(s["images_failed"], 0);
    assert_eq!(s["dataset_bytes"].as_u64().unwrap(), bytes);
    // A plain run holds a window: one slot per worker, each as large as the largest image.
    let largest = inputs
        .iter()
        .map(|p| {
            let (w, h) = image::image_dimensions(assets().join(p)).unwrap();
            w as u64 * h as u64 * channels_of(&assets().join(p))
        })
        .max()
        .unwrap();
    assert_eq!(s["window_slot_bytes"].as_u64().unwrap(), largest);
    let block = s["block_bytes"].as_u64().unwrap();
    assert!(
        block >= 2 * largest && block < 2 * largest + (1 << 20),
        "block of {block} bytes for 2 slots of {largest}"
    );
    assert!(
        block < bytes,
        "the window is smaller than the {bytes}-byte folder"
    );
    assert!((s["megapixels"].as_f64().unwrap() - pixels as f64 / 1e6).abs() < 1e-6);
    let pss = s["peak_total_pss_bytes"].as_u64().unwrap();
    let rss = s["peak_total_rss_bytes"].as_u64().unwrap();
    assert!(
        pss > 0 && pss < rss,
        "Pss {pss} is below Rss {rss}: shared pages are split"
    );
    assert!(s["block"].as_str().unwrap().starts_with("shmpipe-"));

    // A kept dataset holds every image: an RGB job writes every byte of every slot, and however
    // seldom the sampler read, the peak covers the whole dataset (the last reading counts the
    // block's pages in memory).
    let name = format!("pss{}", std::process::id());
    let s = run_ok(
        &assets(),
        &tmp.path().join("rgb"),
        &["--ops", "invert", "-j", "2", "--keep", &name],
    );
    let _ = run(&[os("rm"), os(&name)]);
    assert!(s["window_slot_bytes"].is_null(), "{s}");
    let pss = s["peak_total_pss_bytes"].as_u64().unwrap();
    let dataset = s["dataset_bytes"].as_u64().unwrap();
    assert!(
        pss >= dataset,
        "peak Pss {pss} covers the {dataset}-byte dataset"
    );
    assert!(pss < dataset + (256 << 20), "and not much more: {pss}");
}

/// A plain run's window gives the outputs a kept dataset's slots give, byte for byte, at any
/// number of workers (each worker reuses its one slot image after image). `--channels 3`: a
/// kept dataset is one RGB layout unless told otherwise.
#[test]
fn a_window_gives_the_bytes_of_a_whole_dataset_at_any_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("win{}", std::process::id());
    let whole = tmp.path().join("whole");
    let s = run_ok(
        &assets(),
        &whole,
        &[
            "--ops",
            "blur:1.5,sharpen",
            "-j",
            "2",
            "--channels",
            "3",
            "--keep",
            &name,
        ],
    );
    let _ = run(&[os("rm"), os(&name)]);
    assert!(s["window_slot_bytes"].is_null());
    for j in ["1", "3"] {
        let window = tmp.path().join(format!("window{j}"));
        let ops = ["--ops", "blur:1.5,sharpen", "-j", j, "--channels", "3"];
        let s = run_ok(&assets(), &window, &ops);
        assert!(s["window_slot_bytes"].as_u64().is_some());
        let files = files_under(&whole);
        assert_eq!(files, files_under(&window), "-j {j}");
        for f in files {
            let (a, b) = (
                std::fs::read(whole.join(&f)),
                std::fs::read(window.join(&f)),
            );
            assert!(
                a.unwrap() == b.unwrap(),
                "{} differs at -j {j}",
                f.display()
            );
        }
    }
}

fn write_rgb(path: &Path, w: u32, h: u32, seed: u32) {
    let img = RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + seed) as u8, (y * 5) as u8, ((x ^ y) + seed) as u8])
    });
    img.save(path).unwrap();
}

#[test]
fn bad_files_are_reported_by_name_and_the_good_ones_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    write_rgb(&input.join("good1.png"), 64, 48, 1);
    write_rgb(&input.join("sub/good2.jpg"), 80, 60, 2);
    std::fs::write(input.join("notes.jpg"), b"this is text, not a JPEG").unwrap();
    let png = std::fs::read(input.join("good1.png")).unwrap();
    std::fs::write(input.join("cut.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(
        input.join("README.txt"),
        b"not an image and not named like one",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let output = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--json"),
        os("-j"),
        os("2"),
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "some images failed: exit 1; stderr {}",
        stderr(&output)
    );
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["images_ok"], 2);
    assert_eq!(s["images_failed"], 2);
    assert_eq!(s["files_skipped"], 1);
    let failures = s["failures"].as_array().unwrap();
    let reason_of = |name: &str| {
        failures
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(name))
            .map(|f| f["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} is listed among the failures: {failures:?}"))
    };
    assert!(reason_of("notes.jpg").contains("not an image"));
    assert!(!reason_of("cut.png").is_empty());
    assert_eq!(
        files_under(&out),
        vec![PathBuf::from("good1.png"), PathBuf::from("sub/good2.jpg")]
    );
}

#[test]
fn bad_command_lines_exit_2_naming_the_problem_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = assets();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (
            vec![os("run"), a.as_os_str(), os("--ops"), os("blurr:2")],
            "blurr",
        ),
        (
            vec![os("run"), a.as_os_str(), os("--ops"), os("blur:fast")],
            "fast",
        ),
        (
            vec![os("run"), a.as_os_str(), os("--ops"), os("threshold:999")],
            "threshold",
        ),
        (
            vec![os("run"), os("/no/such/folder"), os("--ops"), os("invert")],
            "/no/such/folder",
        ),
        (
            vec![
                os("run"),
                a.as_os_str(),
                os("-o"),
                file.join("out").into_os_string().leak(),
            ],
            "a-file",
        ),
        (
            vec![os("run"), a.as_os_str(), os("--format"), os("xyz")],
            "xyz",
        ),
        (vec![os("run"), a.as_os_str(), os("-j"), os("0")], "0"),
        (
            vec![os("run"), a.as_os_str(), os("-o"), a.as_os_str()],
            "input folder",
        ),
    ];
    for (args, needle) in cases {
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: message {err:?} names {needle:?}"
        );
    }
}

#[test]
fn a_crashing_worker_is_replaced_and_its_image_redone_from_source() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let crashed = tmp.path().join("crashed");
    let clean_summary = run_ok(&assets(), &clean, &["--ops", CHAIN, "-j", "2"]);
    let output = std::process::Command::new(crate::util::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            crashed.as_os_str(),
            os("--json"),
            os("--ops"),
            os(CHAIN),
            os("-j"),
            os("2"),
        ])
        .env(shmpipe_worker::hooks::CRASH_ENV, "chelsea.png:2")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        s["images_retried"], 2,
        "two deaths with chelsea.png in hand"
    );
    assert!(s["worker_restarts"].as_u64().unwrap() >= 1);
    assert_eq!(s["images_ok"], clean_summary["images_ok"]);
    assert_eq!(
        s["megapixels"], clean_summary["megapixels"],
        "finished images are not redone"
    );
    assert_eq!(files_under(&clean), files_under(&crashed));
    for rel in files_under(&clean) {
        assert!(
            std::fs::read(clean.join(&rel)).unwrap() == std::fs::read(crashed.join(&rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
}

#[test]
fn an_image_in_hand_at_three_crashes_is_quarantined_and_the_rest_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let child = std::process::Command::new(crate::util::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("--json"),
            os("-j"),
            os("2"),
        ])
        .env(shmpipe_worker::hooks::CRASH_ENV, "camera.png:100")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    crate::util::assert_no_leaks(pid);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert!(failures[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("camera.png"));
    assert!(failures[0]["reason"]
        .as_str()
        .unwrap()
        .contains("worker crashed while processing"));
    assert_eq!(
        s["images_ok"].as_u64().unwrap() as usize,
        image_inputs(&assets()).len() - 1
    );
    assert!(!out.join("nested/camera.png").exists());
}

#[test]
fn inputs_that_would_share_an_output_path_are_reported_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    write_rgb(&input.join("a.bmp"), 16, 16, 1);
    write_rgb(&input.join("a.tiff"), 16, 16, 2);
    let out = tmp.path().join("out");
    let output = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--format"),
        os("png"),
        os("--json"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["images_ok"], 1);
    let failure = &s["failures"][0];
    assert!(failure["path"].as_str().unwrap().ends_with("a.tiff"));
    assert!(failure["reason"]
        .as_str()
        .unwrap()
        .contains("would overwrite the output of a.bmp"));
    // The survivor is a.bmp's pixels.
    let got = image::open(out.join("a.png")).unwrap().to_rgb8();
    assert!(got == image::open(input.join("a.bmp")).unwrap().to_rgb8());
}

#[test]
fn resize_puts_every_image_in_one_shape_with_each_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = image_inputs(&assets());
    for fit in ["stretch", "cover", "contain"] {
        let out = tmp.path().join(fit);
        let s = run_ok(
            &assets(),
            &out,
            &[
                "--resize",
                "120x80",
                "--fit",
                fit,
                "--format",
                "png",
                "-j",
                "2",
                // One layout for every image (by default each keeps its own channels).
                "--channels",
                "3",
            ],
        );
        assert_eq!(
            s["dataset_bytes"].as_u64().unwrap(),
            inputs.len() as u64 * 120 * 80 * 3,
            "{fit}: one (N, 80, 120, 3) array"
        );
        for rel in &inputs {
            let out_rel = codec::output_path(Path::new(""), rel, ImageFormat::Png);
            let img = image::open(out.join(&out_rel)).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (120, 80), "{fit} {}", rel.display());
        }
    }
    // camera.png is square: contained in 120x80 it has black bars left and right, none in the
    // middle; covered, it fills the slot.
    let contain = image::open(tmp.path().join("contain/nested/camera.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(contain.get_pixel(2, 40), &image::Rgb([0, 0, 0]));
    assert_eq!(contain.get_pixel(117, 40), &image::Rgb([0, 0, 0]));
    let cover = image::open(tmp.path().join("cover/nested/camera.png"))
        .unwrap()
        .to_rgb8();
    assert_ne!(cover.get_pixel(2, 40), &image::Rgb([0, 0, 0]));
    // A stretch to the image's own size changes (almost) nothing.
    let same = tmp.path().join("same");
    run_ok(
        &assets().join("nested"),
        &same,
        &["--resize", "451x300", "--format", "png", "-j", "1"],
    );
    let a = image::open(same.join("chelsea.png")).unwrap().to_rgb8();
    let b = image::open(assets().join("nested/chelsea.png"))
        .unwrap()
        .to_rgb8();
    let max_diff = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as i32 - *y as i32).abs())
        .max()
        .unwrap();
    assert!(max_diff <= 2, "identity resize differs by {max_diff}");
}

#[test]
fn gray_results_are_written_as_one_channel_unless_rgb_is_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let input = assets().join("nested");
    let (gray, rgb) = (tmp.path().join("gray"), tmp.path().join("rgb"));
    run_ok(
        &input,
        &gray,
        &["--ops", "grayscale,blur:1", "--format", "png"],
    );
    run_ok(
        &input,
        &rgb,
        &["--ops", "grayscale,blur:1", "--format", "png", "--rgb"],
    );
    let g = image::open(gray.join("chelsea.png")).unwrap();
    let r = image::open(rgb.join("chelsea.png")).unwrap();
    assert_eq!(g.color(), image::ColorType::L8);
    assert_eq!(r.color(), image::ColorType::Rgb8);
    assert!(g.to_rgb8() == r.to_rgb8(), "the same pixels either way");
    // Not gray at the end: written as RGB.
    let colour = tmp.path().join("colour");
    run_ok(&input, &colour, &["--ops", "blur:1", "--format", "png"]);
    assert_eq!(
        image::open(colour.join("chelsea.png")).unwrap().color(),
        image::ColorType::Rgb8
    );
}

/// A smooth, colourful test card, `w x h`.
fn card(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        image::Rgb([
            (255.0 * fx) as u8,
            (255.0 * fy) as u8,
            (128.0 + 120.0 * (6.0 * fx + 3.0 * fy).sin()) as u8,
        ])
    })
}

/// A JPEG of `img`, q95, with the given chroma sampling, optionally progressive and with an EXIF
/// orientation.
fn jpeg(
    img: &RgbImage,
    sampling: jpeg_encoder::SamplingFactor,
    progressive: bool,
    orientation: Option<u16>,
) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 95);
    enc.set_sampling_factor(sampling);
    enc.set_progressive(progressive);
    if let Some(o) = orientation {
        enc.add_exif_metadata(&crate::util::exif_orientation(o))
            .unwrap();
    }
    let (w, h) = img.dimensions();
    enc.encode(
        img.as_raw(),
        w as u16,
        h as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    bytes
}

/// What a viewer shows for `path`: decoded with `image`, EXIF orientation applied, as RGB.
fn displayed_rgb(path: &Path) -> RgbImage {
    use image::ImageDecoder;
    let mut decoder = image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    let orientation = decoder.orientation().unwrap();
    let mut img = image::DynamicImage::from_decoder(decoder).unwrap();
    img.apply_orientation(orientation);
    img.to_rgb8()
}

#[test]
fn grayscale_first_reads_jpeg_luma_in_every_layout_and_a_kept_block_holds_rgb() {
    use jpeg_encoder::SamplingFactor::{F_1_1, F_2_1, F_2_2};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // Odd sizes, so MCUs are partly outside the image.
    let img = card(97, 61);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("s420.jpg".into(), jpeg(&img, F_2_2, false, None)),
        ("s422.jpg".into(), jpeg(&img, F_2_1, false, None)),
        ("s444.jpg".into(), jpeg(&img, F_1_1, false, None)),
        ("progressive.jpg".into(), jpeg(&img, F_2_2, true, None)),
    ];
    // Every EXIF orientation: the plane is turned as a viewer turns the image.
    for orientation in 1..=8 {
        let bytes = jpeg(&img, F_2_2, false, Some(orientation));
        cases.push((format!("orientation{orientation}.jpg"), bytes));
    }
    for (name, bytes) in &cases {
        std::fs::write(input.join(name), bytes).unwrap();
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmyk.jpg"),
        input.join("cmyk.jpg"),
    )
    .unwrap();
    let name = format!("luma{}", std::process::id());
    let _cleanup = crate::util::Dataset(name.clone());
    let out = tmp.path().join("out");
    let s = run_ok(
        &input,
        &out,
        &[
            "--ops",
            "grayscale,blur:1",
            "--format",
            "png",
            "-j",
            "2",
            "--keep",
            &name,
            "--quiet",
        ],
    );
    assert_eq!(s["images_ok"], cases.len() as u64 + 1, "{s}");
    let saved = tmp.path().join("saved");
    crate::util::ok(&[
        os("save"),
        os(&name),
        os("-o"),
        saved.as_os_str(),
        os("--format"),
        os("png"),
    ]);
    for file in files_under(&input) {
        let png = file.with_extension("png");
        let got = image::open(out.join(&png)).unwrap();
        assert_eq!(got.color(), image::ColorType::L8, "{}", file.display());
        let got = got.to_rgb8();
        let mut want = displayed_rgb(&input.join(&file));
        let (w, h) = want.dimensions();
        let view = ndarray::ArrayViewMut3::from_shape((h as usize, w as usize, 3), &mut want);
        OpChain::parse("grayscale,blur:1")
            .unwrap()
            .apply(view.unwrap(), &mut Scratch::default());
        assert_eq!(got.dimensions(), (w, h), "{} shape", file.display());
        assert_close_to_rgb_grayscale(&got, &want, &file.display().to_string());
        // The kept block ends in (H, W, 3): saving it gives the run's pixels, as RGB.
        let kept = image::open(saved.join(&png)).unwrap();
        assert_eq!(kept.color(), image::ColorType::Rgb8);
        assert!(
            kept.to_rgb8() == got,
            "{}: kept block differs",
            file.display()
        );
    }
}

#[test]
fn png_compression_levels_give_the_same_pixels_in_smaller_files() {
    let tmp = tempfile::tempdir().unwrap();
    let input = assets().join("nested");
    let mut sizes = Vec::new();
    let mut pixels = Vec::new();
    for level in ["fast", "default", "best"] {
        let out = tmp.path().join(level);
        run_ok(
            &input,
            &out,
            &[
                "--ops",
                "blur:1",
                "--format",
                "png",
                "--png-compression",
                level,
            ],
        );
        let files = files_under(&out);
        assert_eq!(files.len(), 2, "{level}");
        sizes.push(
            files
                .iter()
                .map(|f| out.join(f).metadata().unwrap().len())
                .sum::<u64>(),
        );
        pixels.push(
            files
                .iter()
                .map(|f| image::open(out.join(f)).unwrap().to_rgb8())
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        pixels[0] == pixels[1] && pixels[1] == pixels[2],
        "lossless at every level"
    );
    assert!(sizes[2] < sizes[0], "best is smaller than fast: {sizes:?}");
    let bad = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        tmp.path().join("bad").as_os_str(),
        os("--png-compression"),
        os("max"),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("fast, default, best"),
        "{}",
        stderr(&bad)
    );
}

/// One image and several cores: the worker runs the chain's steps on row bands in threads (the
/// cores no other worker uses). The output is the single-thread chain's, byte for byte.
#[test]
fn a_lone_image_uses_the_idle_cores_and_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    card(640, 481).save(input.join("one.png")).unwrap();
    let chain = "blur:3,sharpen:1.2,contrast:1.1,flip-h";
    let mut outputs = Vec::new();
    for workers in ["1", "4"] {
        let out = tmp.path().join(format!("j{workers}"));
        let s = run_ok(&input, &out, &["--ops", chain, "-j", workers, "--quiet"]);
        assert_eq!(s["images_ok"], 1);
        outputs.push(std::fs::read(out.join("one.png")).unwrap());
    }
    assert!(outputs[0] == outputs[1], "-j 1 and -j 4 differ");
    let got = image::load_from_memory(&outputs[1]).unwrap().to_rgb8();
    assert!(got == reference(&input.join("one.png"), chain));
}
