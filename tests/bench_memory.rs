//! The memory mechanism at small scale: with one shared block the total Pss of all processes
//! stays near the decoded dataset; with a private copy per worker it is several times larger.
//! This checks the mechanism, not speed; the full-size figures are in the README.

mod common;

use std::process::Command;

use common::files_under;

#[test]
fn shared_block_costs_about_one_dataset_and_copies_cost_one_per_worker() {
    let out = Command::new(common::bin())
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
}

#[test]
fn gen_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["a", "b"] {
        let status = Command::new(common::bin())
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
