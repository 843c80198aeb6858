//! The memory mechanism at small scale: with one shared block the total Pss of all processes
//! stays near the decoded dataset; with a private copy per worker it is several times larger.
//! This checks the mechanism, not speed; the full-size figures are in docs/benchmarks.md.

use std::process::Command;

use crate::util::files_under;

#[test]
fn shared_block_costs_about_one_dataset_and_copies_cost_one_per_worker() {
    let out = Command::new(crate::util::bin())
        .args([
            "bench",
            "memory",
            "--generate",
            "64MiB",
            "--image-size",
            "640x480",
            "-j",
            "4",
            "--json",
            "--series",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dataset = b["dataset_bytes"].as_u64().unwrap();
    assert!(
        dataset >= 64 << 20,
        "the generated dataset has the asked decoded size"
    );
    assert_eq!(b["workers"], 4);
    // The default job decodes the same RGB pixels in both modes, and says which ops ran.
    assert_eq!(b["ops"], "blur:2");
    assert_eq!(b["decode_shared"], "rgb");
    assert_eq!(b["decode_copy"], "rgb");
    let shared = b["shared"]["peak_total_pss_bytes"].as_u64().unwrap();
    let copy = b["copy"]["peak_total_pss_bytes"].as_u64().unwrap();
    assert_eq!(b["shared"]["images_failed"], 0);
    assert_eq!(b["copy"]["images_failed"], 0);
    assert!(
        shared < copy / 2,
        "shared {shared} is below half of copy {copy}"
    );
    assert!(
        (shared as f64) < 1.5 * dataset as f64,
        "shared {shared} is below 1.5x the dataset {dataset}"
    );
    assert!(
        (copy as f64) > 3.0 * dataset as f64,
        "the copies are real: {copy} for a {dataset}-byte dataset"
    );
    // Rss counts the shared block once per process that touched it; Pss splits it.
    assert!(b["shared"]["peak_total_rss_bytes"].as_u64().unwrap() >= shared);
    // The series holds the readings as made, each later than the one before: the reading
    // made at exit from the block's pages is apart from it, and the peak is the largest of all.
    for mode in ["shared", "copy"] {
        let m = &b[mode];
        let series = m["series"].as_array().unwrap();
        assert!(series.len() >= 2, "{mode}: {m}");
        let times: Vec<f64> = series.iter().map(|s| s["t_s"].as_f64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{mode}: {times:?}");
        let read = series.iter().map(|s| s["pss"].as_u64().unwrap()).max();
        let at_exit = m["at_exit"]["pss"].as_u64().expect("a reading at exit");
        assert!(m["at_exit"]["t_s"].as_f64().unwrap() >= *times.last().unwrap());
        assert_eq!(
            m["peak_total_pss_bytes"].as_u64(),
            read.max(Some(at_exit)),
            "{mode}"
        );
    }
    assert!(b["machine"].as_str().unwrap().contains("cores"), "{b}");
}

#[test]
fn gen_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["a", "b"] {
        let status = Command::new(crate::util::bin())
            .args([
                "gen",
                tmp.path().join(dir).to_str().unwrap(),
                "--count",
                "3",
                "--size",
                "96x64",
                "--format",
                "png",
                "--seed",
                "7",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let files = files_under(&tmp.path().join("a"));
    assert_eq!(files.len(), 3);
    for f in files {
        assert!(
            std::fs::read(tmp.path().join("a").join(&f)).unwrap()
                == std::fs::read(tmp.path().join("b").join(&f)).unwrap()
        );
        assert_eq!(
            image::image_dimensions(tmp.path().join("a").join(&f)).unwrap(),
            (96, 64)
        );
    }
}

/// Runs a small `bench memory` that plots to `plot`.
fn bench_with_plot(plot: &std::path::Path) -> std::process::Output {
    Command::new(crate::util::bin())
        .args([
            "bench",
            "memory",
            "--generate",
            "8MiB",
            "--image-size",
            "320x240",
            "-j",
            "2",
            "--plot",
        ])
        .arg(plot)
        .output()
        .unwrap()
}

#[test]
fn plot_ending_in_png_is_a_png_with_both_curves_and_antialiased_text() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("memory.png");
    let out = bench_with_plot(&path);
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
    assert_eq!(
        image::ImageReader::open(&path)
            .unwrap()
            .with_guessed_format()
            .unwrap()
            .format(),
        Some(image::ImageFormat::Png),
        "the bytes are PNG"
    );
    let plot = image::open(&path).unwrap().to_rgb8();
    assert_eq!(plot.dimensions(), (960, 600));
    let near = |rgb: [u8; 3]| {
        plot.pixels()
            .filter(|p| p.0.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 12))
            .count()
    };
    // Each curve is a 2-pixel line across the chart, plus its legend swatch.
    let shared = near([31, 119, 180]);
    let copy = near([214, 39, 40]);
    assert!(
        shared > 600,
        "the shared curve is drawn in blue: {shared} px"
    );
    assert!(copy > 600, "the copy curve is drawn in red: {copy} px");
    assert!(
        near([255, 255, 255]) > 960 * 600 / 2,
        "the background is white"
    );
    // Antialiased: the text's and lines' edges blend into the white in many shades of gray
    // (a bitmap font and aliased lines give a handful of colours).
    let grays: std::collections::BTreeSet<u8> = plot
        .pixels()
        .filter(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2])
        .map(|p| p.0[0])
        .collect();
    assert!(grays.len() > 100, "{} shades of gray", grays.len());
    // No temporary is left beside it.
    assert_eq!(
        files_under(tmp.path()),
        vec![std::path::PathBuf::from("memory.png")]
    );
}

#[test]
fn plot_ending_in_svg_has_its_words_as_text() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("memory.svg");
    let out = bench_with_plot(&path);
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
    let svg = std::fs::read_to_string(&path).unwrap();
    // Every word is a <text> element a reader can select and a search can find.
    let texts: Vec<&str> = svg
        .split("<text")
        .skip(1)
        .map(|t| t.split_once('>').unwrap().1.split('<').next().unwrap())
        .collect();
    let said = |what: &str| texts.iter().any(|t| t.contains(what));
    for what in [
        "time since the run started (s)",
        "total Pss of all processes (MiB)",
        "decoded dataset: ",
        "one shared block: peak ",
        "a copy per worker: peak ",
        "the memory of one shared block",
        "-j 2",
        "no --resize",
        "--ops blur:2",
        " cores, ",
    ] {
        assert!(said(what), "{what:?} is not in the text of {texts:?}");
    }
    assert_eq!(
        files_under(tmp.path()),
        vec![std::path::PathBuf::from("memory.svg")]
    );
}

#[test]
fn plot_with_an_unknown_ending_is_refused_before_measuring() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("memory.jpg");
    let out = bench_with_plot(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = crate::util::stderr(&out);
    assert!(err.contains("memory.jpg"), "names the file: {err}");
    assert!(err.contains(".svg, .png"), "lists the valid endings: {err}");
    assert!(!err.contains("generating"), "nothing measured first: {err}");
    assert!(files_under(tmp.path()).is_empty());
}
