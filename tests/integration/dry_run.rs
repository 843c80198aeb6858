//! `--dry-run`: the plan said, nothing done. Checked against the run that follows it: the same
//! outputs, refusals, skipped files and block size, and before it nothing created anywhere.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::{assets, files_under, os, own_backing, run, shmpipe, stderr};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn strings(value: &serde_json::Value) -> BTreeSet<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// A folder of two photos (one in a subfolder), a README and a damaged PNG.
fn folder(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), root.join("rocket.jpg")).unwrap();
    std::fs::copy(assets().join("coffee.png"), root.join("sub/coffee.png")).unwrap();
    std::fs::write(root.join("README.txt"), "not an image\n").unwrap();
    std::fs::write(root.join("sub/bad.png"), "not a PNG either\n").unwrap();
}

fn backing_is_empty(backing: &Path) -> bool {
    std::fs::read_dir(backing).unwrap().next().is_none()
}

#[test]
fn a_dry_run_names_what_the_run_then_does_and_creates_nothing() {
    let backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    folder(&input);
    let inputs_before = files_under(&input);
    let out = tmp.path().join("out/deeper");
    let args = |extra: &[&str]| {
        let mut a = vec![
            os("run").to_owned(),
            input.clone().into_os_string(),
            os("-o").to_owned(),
            out.clone().into_os_string(),
            os("--format").to_owned(),
            os("webp").to_owned(),
            os("-j").to_owned(),
            os("2").to_owned(),
            os("--json").to_owned(),
        ];
        a.extend(extra.iter().map(|e| os(e).to_owned()));
        a
    };
    let dry = run(&args(&["--dry-run"]));
    // The run would end with 1: the damaged PNG.
    assert_eq!(dry.status.code(), Some(1), "{}", stderr(&dry));
    let plan = json(&dry);
    assert_eq!(plan["dry_run"], true);
    assert!(!tmp.path().join("out").exists(), "the dry run created -o");
    assert!(backing_is_empty(backing.path()), "the dry run left a block");
    assert_eq!(files_under(&input), inputs_before);
    assert_eq!(plan["images"], 2);
    let refused = plan["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{plan}");
    assert!(refused[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("sub/bad.png"));
    assert!(refused[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not an image"));
    let skipped = strings(&plan["skipped"]);
    assert_eq!(
        skipped,
        BTreeSet::from([input.join("README.txt").display().to_string()])
    );
    let outputs: BTreeSet<String> = plan["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["output"].as_str().unwrap().to_string())
        .collect();

    // The run itself writes exactly those outputs, refuses and skips the same files, and its
    // block has the size the dry run said.
    let done = run(&args(&[]));
    assert_eq!(done.status.code(), Some(1), "{}", stderr(&done));
    let summary = json(&done);
    let written: BTreeSet<String> = files_under(&out)
        .iter()
        .map(|f| out.join(f).display().to_string())
        .collect();
    assert_eq!(written, outputs);
    assert_eq!(written.len(), 2);
    assert_eq!(strings(&summary["skipped"]), skipped);
    assert_eq!(summary["failures"][0]["path"], refused[0]["path"]);
    for field in ["block_bytes", "window_slot_bytes", "dataset_bytes"] {
        assert_eq!(summary[field], plan[field], "{field}");
    }

    // Now that the outputs exist, --skip-existing would leave them alone.
    let again = run(&args(&["--dry-run", "--skip-existing"]));
    let plan = json(&again);
    assert_eq!(plan["existing"], 2, "{plan}");
    assert_eq!(plan["images"], 0);
    assert_eq!(plan["outputs"].as_array().unwrap().len(), 0);
}

#[test]
fn the_text_report_lists_every_output_and_verbose_names_skipped_files() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    folder(&input);
    let out = tmp.path().join("out");
    let dry = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--dry-run"),
    ]);
    let text = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(text.starts_with("dry run: "), "{text}");
    assert!(
        text.contains(&out.join("rocket.jpg").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&out.join("sub/coffee.png").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains("1 file skipped: not images (--verbose names them)"),
        "{text}"
    );
    assert!(!text.contains("README.txt"), "{text}");
    assert!(!out.exists());
    // --verbose names the skipped file, in the dry run and in the run's own summary.
    let verbose = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--dry-run"),
        os("--verbose"),
    ]);
    let skipped = format!("skipped: {}", input.join("README.txt").display());
    assert!(String::from_utf8_lossy(&verbose.stdout).contains(&skipped));
    let done = run(&[os("run"), input.as_os_str(), os("-v"), os("-j"), os("1")]);
    assert!(
        String::from_utf8_lossy(&done.stdout).contains(&skipped),
        "{}",
        String::from_utf8_lossy(&done.stdout)
    );
}

#[test]
fn a_dry_run_of_a_run_that_would_overwrite_an_input_is_refused() {
    let backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("a.jpg")).unwrap();
    std::fs::copy(assets().join("seeding.jpg"), input.join("sub/a.jpg")).unwrap();
    let before = std::fs::read(input.join("sub/a.jpg")).unwrap();
    let listing = files_under(&input);
    // in/a.jpg would be written to in/sub/a.jpg, an input.
    let dry = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        input.join("sub").as_os_str(),
        os("--dry-run"),
    ]);
    assert_eq!(dry.status.code(), Some(2), "{}", stderr(&dry));
    assert!(
        stderr(&dry).contains("would overwrite the input"),
        "{}",
        stderr(&dry)
    );
    assert!(stderr(&dry).contains("sub/a.jpg"), "{}", stderr(&dry));
    assert_eq!(files_under(&input), listing);
    assert_eq!(std::fs::read(input.join("sub/a.jpg")).unwrap(), before);
    assert!(backing_is_empty(backing.path()));
}

#[test]
fn a_dry_run_load_creates_no_dataset_and_refuses_a_taken_name() {
    let backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    folder(&input);
    let name = format!("dry{}", std::process::id());
    let load = |extra: &[&str]| {
        let mut a = vec![
            os("load"),
            input.as_os_str(),
            os("--name"),
            os(&name),
            os("--resize"),
            os("64x48"),
            os("--fit"),
            os("stretch"),
            os("--json"),
        ];
        a.extend(extra.iter().map(|e| os(e)));
        shmpipe(&a)
    };
    let dry = load(&["--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", stderr(&dry));
    let plan = json(&dry);
    assert_eq!(plan["dataset"], name.as_str());
    assert_eq!(plan["images"], 2);
    // A dataset holds all its images: 2 of 64x48x3, no window.
    assert_eq!(plan["dataset_bytes"], 2 * 64 * 48 * 3);
    assert!(plan["window_slot_bytes"].is_null());
    assert!(
        backing_is_empty(backing.path()),
        "the dry run created a block"
    );
    let real = load(&[]);
    let summary = json(&real);
    assert_eq!(summary["block_bytes"], plan["block_bytes"]);
    let taken = load(&["--dry-run"]);
    assert_eq!(taken.status.code(), Some(2));
    assert!(
        stderr(&taken).contains("exists already"),
        "{}",
        stderr(&taken)
    );
    assert!(shmpipe(&[os("rm"), os(&name)]).status.success());
}
