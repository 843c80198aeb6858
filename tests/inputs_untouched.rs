//! No input is ever written: an output that would land on an input file (by path, through a hard
//! link or a symlinked folder) stops the run before anything is written, and an output folder
//! inside the input folder is left out of the walk, so reruns never take outputs as inputs.

mod common;

use std::path::{Path, PathBuf};

use common::{assets, files_under, os, run, stderr};

/// Every file under `root` with its bytes.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(root)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(root.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

fn refused(args: &[&std::ffi::OsStr], clash: &str) {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("would overwrite the input") && err.contains(clash),
        "names {clash}: {err}"
    );
}

/// The reproduction of issue 13: `in/sub/rocket.jpg` would have been replaced by the inverted
/// `in/rocket.jpg`.
#[test]
fn an_output_folder_holding_inputs_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("rocket.jpg")).unwrap();
    std::fs::copy(assets().join("seeding.jpg"), input.join("sub/rocket.jpg")).unwrap();
    let before = snapshot(&input);
    refused(
        &[
            os("run"),
            input.as_os_str(),
            os("-o"),
            input.join("sub").as_os_str(),
            os("--ops"),
            os("invert"),
        ],
        "in/sub/rocket.jpg",
    );
    assert_eq!(snapshot(&input), before, "inputs unchanged, nothing added");
}

#[test]
fn a_hard_link_or_a_symlinked_folder_to_an_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("rocket.jpg")).unwrap();
    std::fs::copy(assets().join("seeding.jpg"), input.join("sub/seeding.jpg")).unwrap();
    let before = snapshot(&input);

    // out/rocket.jpg is the input under a second name.
    let linked = tmp.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::fs::hard_link(input.join("rocket.jpg"), linked.join("rocket.jpg")).unwrap();
    refused(
        &[
            os("run"),
            input.as_os_str(),
            os("-o"),
            linked.as_os_str(),
            os("--ops"),
            os("invert"),
        ],
        "rocket.jpg",
    );

    // out/sub is the input's sub folder.
    let symlinked = tmp.path().join("symlinked");
    std::fs::create_dir_all(&symlinked).unwrap();
    std::os::unix::fs::symlink(input.join("sub"), symlinked.join("sub")).unwrap();
    refused(
        &[
            os("run"),
            input.as_os_str(),
            os("-o"),
            symlinked.as_os_str(),
            os("--ops"),
            os("invert"),
        ],
        "sub/seeding.jpg",
    );
    assert_eq!(snapshot(&input), before, "inputs unchanged");
    assert_eq!(files_under(&linked), [PathBuf::from("rocket.jpg")]);
}

#[test]
fn an_output_folder_inside_the_input_is_left_out_of_the_walk_run_after_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("b")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("a.jpg")).unwrap();
    std::fs::copy(assets().join("coffee.png"), input.join("b/c.png")).unwrap();
    let out_dir = input.join("out");
    let args = [
        os("run"),
        input.as_os_str(),
        os("-o"),
        out_dir.as_os_str(),
        os("--ops"),
        os("invert"),
        os("--json"),
    ];
    let mut outputs = Vec::new();
    for attempt in 1..=2 {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {attempt}: {}",
            stderr(&out)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            summary["images_ok"], 2,
            "run {attempt}: outputs are not inputs"
        );
        assert_eq!(summary["images_failed"], 0, "run {attempt}");
        let files = files_under(&out_dir);
        assert_eq!(
            files,
            [".shmpipe-output", "a.jpg", "b/c.png"].map(PathBuf::from),
            "run {attempt}: no out/out"
        );
        outputs.push(snapshot(&out_dir));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "the second run writes the same outputs"
    );
}

/// `save` into the folder a dataset was loaded from would overwrite the sources with the
/// transformed pixels: it refuses before writing anything, and the inputs stay as they were.
#[test]
fn save_refuses_to_write_over_the_datasets_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("nested")).unwrap();
    for name in ["rocket.jpg", "coffee.png", "nested/camera.png"] {
        std::fs::copy(common::assets().join(name), input.join(name)).unwrap();
    }
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = common::files_under(&input)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(input.join(&f)).unwrap();
            (f, bytes)
        })
        .collect();
    let name = format!("srcsave{}", std::process::id());
    let _dataset = common::Dataset(name.clone());
    common::ok(&[
        common::os("load"),
        input.as_os_str(),
        common::os("--name"),
        common::os(&name),
        common::os("-q"),
    ]);
    common::ok(&[
        common::os("apply"),
        common::os(&name),
        common::os("--ops"),
        common::os("invert"),
        common::os("-q"),
    ]);
    let out = std::process::Command::new(common::bin())
        .args([
            common::os("save"),
            common::os(&name),
            common::os("-o"),
            input.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("refusing to overwrite an input"));
    let after: Vec<(std::path::PathBuf, Vec<u8>)> = common::files_under(&input)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(input.join(&f)).unwrap();
            (f, bytes)
        })
        .collect();
    assert!(
        before == after,
        "save changed or added files in the input folder"
    );
}
