//! No input is ever written: an output that would land on an input file (by path, through a hard
//! link or a symlinked folder) stops the run before anything is written, and an output folder
//! inside the input folder is left out of the walk, so reruns never take outputs as inputs.
//! A dataset's `save` writes nothing onto or among its sources, and `export` never replaces a
//! source or a block.

use std::path::{Path, PathBuf};

use crate::util::{assets, files_under, os, run, stderr};

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

/// `run --format png -o OUT` where OUT/sub is a symbolic link to the input's sub folder: no
/// output replaces an input, but `sub/seeding.png` would be written into the input folder. Every
/// output's real location is checked before any worker starts: exit 2 naming it, nothing written.
#[test]
fn an_output_that_lands_in_the_input_folder_through_a_link_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("rocket.jpg")).unwrap();
    std::fs::copy(assets().join("seeding.jpg"), input.join("sub/seeding.jpg")).unwrap();
    let before = snapshot(&input);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::os::unix::fs::symlink(input.join("sub"), out_dir.join("sub")).unwrap();
    let out = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out_dir.as_os_str(),
        os("--format"),
        os("png"),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("out/sub/seeding.png")
            && err.contains("through a symbolic link")
            && err.contains("inside the input folder"),
        "names the output and why: {err}"
    );
    assert_eq!(snapshot(&input), before, "inputs unchanged, nothing added");
    assert!(
        !out_dir.join("rocket.png").exists(),
        "nothing written, not even the outputs that were fine"
    );

    // Through a link inside the input too: in/link leads to a folder of inputs elsewhere, and
    // out/link to the same folder.
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(assets().join("coffee.png"), photos.join("cup.png")).unwrap();
    let input2 = tmp.path().join("in2");
    std::fs::create_dir_all(&input2).unwrap();
    std::os::unix::fs::symlink(&photos, input2.join("link")).unwrap();
    let out2 = tmp.path().join("out2");
    std::fs::create_dir_all(&out2).unwrap();
    std::os::unix::fs::symlink(&photos, out2.join("link")).unwrap();
    let photos_before = snapshot(&photos);
    let out = run(&[
        os("run"),
        input2.as_os_str(),
        os("-o"),
        out2.as_os_str(),
        os("--format"),
        os("jpeg"),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("link/cup.jpg") && err.contains("a folder of input files"),
        "{err}"
    );
    assert_eq!(
        snapshot(&photos),
        photos_before,
        "nothing added among the inputs"
    );
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
        std::fs::copy(crate::util::assets().join(name), input.join(name)).unwrap();
    }
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = crate::util::files_under(&input)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(input.join(&f)).unwrap();
            (f, bytes)
        })
        .collect();
    let name = format!("srcsave{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    crate::util::ok(&[
        crate::util::os("load"),
        input.as_os_str(),
        crate::util::os("--name"),
        crate::util::os(&name),
        crate::util::os("-q"),
    ]);
    crate::util::ok(&[
        crate::util::os("apply"),
        crate::util::os(&name),
        crate::util::os("--ops"),
        crate::util::os("invert"),
        crate::util::os("-q"),
    ]);
    let out = std::process::Command::new(crate::util::bin())
        .args([
            crate::util::os("save"),
            crate::util::os(&name),
            crate::util::os("-o"),
            input.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", crate::util::stderr(&out));
    assert!(crate::util::stderr(&out).contains("would overwrite the input"));
    let after: Vec<(std::path::PathBuf, Vec<u8>)> = crate::util::files_under(&input)
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

/// Loads `input` as a dataset in one shape (so it can be exported); removed when dropped.
fn loaded(input: &Path, tag: &str) -> crate::util::Dataset {
    let name = format!("{tag}{}", std::process::id());
    let dataset = crate::util::Dataset(name.clone());
    crate::util::ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--resize"),
        os("32x24"),
        os("-q"),
    ]);
    dataset
}

/// Issue 22, item 5: `export NAME FILE` onto one of the dataset's sources (by its path, or a
/// hard link to it) is refused naming the file, and writes nothing; before, the photo became a
/// .npy, exit 0.
#[test]
fn export_refuses_to_replace_a_source_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("photo.jpg")).unwrap();
    std::fs::copy(assets().join("coffee.png"), input.join("sub/cup.png")).unwrap();
    let linked = tmp.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::fs::hard_link(input.join("sub/cup.png"), linked.join("cup.npy")).unwrap();
    let before = snapshot(&input);
    let dataset = loaded(&input, "srcexport");
    for (file, names) in [
        (input.join("photo.jpg"), "photo.jpg"),
        (input.join("sub/../photo.jpg"), "photo.jpg"),
        (linked.join("cup.npy"), "cup.png"),
    ] {
        let out = run(&[os("export"), os(&dataset.0), file.as_os_str()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", file.display());
        assert!(
            err.contains("is a source file of") && err.contains(names),
            "{}: {err}",
            file.display()
        );
    }
    assert_eq!(snapshot(&input), before, "inputs unchanged, nothing added");
    assert_eq!(files_under(&linked), [PathBuf::from("cup.npy")]);
    // Nor onto the dataset's own block, which it would have replaced (and `rm` then refused it).
    let block = Path::new("/dev/shm").join(format!("shmpipe-{}", dataset.0));
    let out = run(&[os("export"), os(&dataset.0), block.as_os_str()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refusing to replace a dataset"), "{err}");
    // The same export elsewhere works: the dataset is whole.
    let elsewhere = tmp.path().join("x.npy");
    let out = run(&[os("export"), os(&dataset.0), elsewhere.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Issue 22, item 5: `save --format png -o OUT` where OUT/sub is a symbolic link to the input's
/// sub folder would have written `in/sub/seeding.png` beside its source. Any output whose real
/// location lies in the dataset's input folder is refused before anything is written.
#[test]
fn save_refuses_outputs_that_land_in_the_input_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("rocket.jpg")).unwrap();
    std::fs::copy(assets().join("seeding.jpg"), input.join("sub/seeding.jpg")).unwrap();
    let before = snapshot(&input);
    let dataset = loaded(&input, "srcsavelink");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::os::unix::fs::symlink(input.join("sub"), out_dir.join("sub")).unwrap();
    let save = |out: &Path| {
        run(&[
            os("save"),
            os(&dataset.0),
            os("-o"),
            out.as_os_str(),
            os("--format"),
            os("png"),
        ])
    };
    let out = save(&out_dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sub/seeding.png") && err.contains("inside the input folder"),
        "{err}"
    );
    assert!(
        !out_dir.join("rocket.png").exists(),
        "nothing written, not even the outputs that were fine"
    );
    // A folder inside the input folder, named as it is: refused too, and not even created.
    let inside = input.join("saved");
    let out = save(&inside);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("inside the input folder"), "{err}");
    assert_eq!(snapshot(&input), before, "inputs unchanged, nothing added");
    assert!(!inside.exists());
}
