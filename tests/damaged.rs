//! Damaged files are failures, never grey images: JPEGs cut short or with corrupt entropy-coded
//! data fail on every decode path (RGB, the luma plane of a grayscale-first chain, resized),
//! naming the file, and `--allow-truncated` keeps them as warnings. A truncated PNG fails too.

mod common;

use std::path::Path;

use common::{assets, os, run, stderr};

/// The cuts and the corruption of issue 13, each beside one good copy of the same photo.
const DAMAGED: [&str; 5] = [
    "cut10.jpg",
    "cut50.jpg",
    "cut90.jpg",
    "cut99.jpg",
    "xored.jpg",
];

/// Where the first scan's entropy-coded data starts: past the SOS segment.
fn scan_start(jpeg: &[u8]) -> usize {
    let mut at = 2;
    loop {
        assert_eq!(jpeg[at], 0xFF, "marker expected at {at}");
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        let marker = jpeg[at + 1];
        at += 2 + len;
        if marker == 0xDA {
            return at;
        }
    }
}

fn build(input: &Path) {
    std::fs::create_dir_all(input).unwrap();
    let jpeg = std::fs::read(assets().join("rocket.jpg")).unwrap();
    std::fs::write(input.join("good.jpg"), &jpeg).unwrap();
    for percent in [10, 50, 90, 99] {
        let cut = &jpeg[..jpeg.len() * percent / 100];
        std::fs::write(input.join(format!("cut{percent}.jpg")), cut).unwrap();
    }
    // 200 bytes in the middle of the scan XOR-ed with a fixed pseudo-random sequence.
    let mut xored = jpeg.clone();
    let start = scan_start(&jpeg);
    let middle = start + (jpeg.len() - start) / 2;
    let mut state = 0x9E37_79B9u32;
    for b in &mut xored[middle..middle + 200] {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *b ^= state as u8;
    }
    std::fs::write(input.join("xored.jpg"), xored).unwrap();
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// `(file name, reason)` of each entry of a summary list.
fn entries(list: &serde_json::Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = Path::new(f["path"].as_str().unwrap());
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

fn expect_damage(name: &str, reason: &str) {
    let expected = if name.starts_with("cut") {
        "truncated JPEG: data ends before the last row"
    } else {
        "corrupt JPEG data"
    };
    assert!(reason.contains(expected), "{name}: {reason:?}");
}

/// The decode paths: RGB through the general path, the luma plane, resized at decode.
const PATHS: [&[&str]; 3] = [
    &["--ops", "invert"],
    &["--ops", "grayscale"],
    &["--resize", "64x64"],
];

#[test]
fn damaged_jpegs_fail_on_every_decode_path_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    build(&input);
    for (k, path_args) in PATHS.iter().enumerate() {
        let out_dir = tmp.path().join(format!("out{k}"));
        let mut args = vec![
            os("run"),
            input.as_os_str(),
            os("-o"),
            out_dir.as_os_str(),
            os("-j"),
            os("2"),
            os("--json"),
        ];
        args.extend(path_args.iter().map(|a| os(a)));
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{path_args:?}: {}",
            stderr(&out)
        );
        let summary = json(&out);
        assert_eq!(summary["images_ok"], 1, "{path_args:?}");
        let failures = entries(&summary["failures"]);
        let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, DAMAGED, "{path_args:?}");
        for (name, reason) in &failures {
            expect_damage(name, reason);
        }
        assert_eq!(summary["warnings"].as_array().unwrap().len(), 0);
        // Only the good image has an output.
        let written: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(written, ["good.jpg"], "{path_args:?}");
    }
}

#[test]
fn allow_truncated_keeps_damaged_jpegs_as_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    build(&input);
    for (k, path_args) in PATHS.iter().enumerate() {
        let out_dir = tmp.path().join(format!("out{k}"));
        let mut args = vec![
            os("run"),
            input.as_os_str(),
            os("-o"),
            out_dir.as_os_str(),
            os("-j"),
            os("2"),
            os("--allow-truncated"),
            os("--json"),
        ];
        args.extend(path_args.iter().map(|a| os(a)));
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{path_args:?}: {}",
            stderr(&out)
        );
        let summary = json(&out);
        assert_eq!(summary["images_ok"], 6, "{path_args:?}");
        assert_eq!(summary["images_failed"], 0, "{path_args:?}");
        let warnings = entries(&summary["warnings"]);
        let names: Vec<&str> = warnings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, DAMAGED, "{path_args:?}");
        for (name, reason) in &warnings {
            expect_damage(name, reason);
            assert!(out_dir.join(name).is_file(), "{name} written");
        }
    }
    // The text summary counts and lists them.
    let out = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        tmp.path().join("text").as_os_str(),
        os("--allow-truncated"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("5 images kept with damage (--allow-truncated)"),
        "{text}"
    );
    for name in DAMAGED {
        assert!(
            text.lines()
                .any(|l| l.contains("warning:") && l.contains(name)),
            "{name} listed: {text}"
        );
    }
}

#[test]
fn a_truncated_png_fails_with_or_without_allow_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let png = std::fs::read(assets().join("coffee.png")).unwrap();
    std::fs::write(input.join("cut.png"), &png[..png.len() / 2]).unwrap();
    for extra in [None, Some("--allow-truncated")] {
        let mut args = vec![
            os("run"),
            input.as_os_str(),
            os("--ops"),
            os("invert"),
            os("--json"),
        ];
        args.extend(extra.map(os));
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        let summary = json(&out);
        let failures = entries(&summary["failures"]);
        assert_eq!(failures.len(), 1, "{extra:?}");
        assert_eq!(failures[0].0, "cut.png");
        assert!(!failures[0].1.is_empty());
    }
}
