//! `gen` writes each image through a temporary file and a rename: killed at any moment it
//! leaves only whole images under image names, stopped by a signal it finishes the images in
//! hand and says how many it wrote, and the next `gen` into the folder removes what a killed one
//! left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

const COUNT: &str = "400";

fn start_gen(dir: &Path) -> Child {
    Command::new(crate::util::bin())
        .arg("gen")
        .arg(dir)
        .args(["--count", COUNT, "--size", "800x600", "--format", "png"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// (images under their final names, temporaries), by file name.
fn listing(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let mut images = Vec::new();
    let mut temporaries = Vec::new();
    // Before gen has created the folder, it holds nothing.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (images, temporaries);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            temporaries.push(name);
        } else {
            images.push(entry.path());
        }
    }
    images.sort();
    (images, temporaries)
}

/// Waits until `gen` has renamed at least `n` images into place.
fn wait_for_images(dir: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while listing(dir).0.len() < n {
        assert!(
            Instant::now() < deadline,
            "gen wrote {n} images within 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_whole(images: &[PathBuf]) {
    for path in images {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("img") && name.ends_with(".png"),
            "only image names: {name}"
        );
        let img = image::open(path).unwrap_or_else(|e| panic!("{name} decodes: {e}"));
        assert_eq!((img.width(), img.height()), (800, 600), "{name}");
    }
}

#[test]
fn a_killed_gen_leaves_only_whole_images_and_the_next_removes_its_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gen");
    let mut gen = start_gen(&dir);
    wait_for_images(&dir, 3);
    kill_process(Pid::from_raw(gen.id() as i32).unwrap(), Signal::KILL).unwrap();
    let status = gen.wait().unwrap();
    assert!(!status.success());
    let (images, temporaries) = listing(&dir);
    assert!(images.len() >= 3 && images.len() < 400, "{}", images.len());
    assert_whole(&images);
    for t in &temporaries {
        assert!(
            t.contains(".shmpipe-tmp-shmpipe-"),
            "a temporary of ours: {t}"
        );
    }
    // The next gen into the folder removes what the dead one left, and finishes.
    let out = Command::new(crate::util::bin())
        .arg("gen")
        .arg(&dir)
        .args(["--count", "4", "--size", "800x600", "--format", "png"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    let (images, temporaries) = listing(&dir);
    assert!(temporaries.is_empty(), "left: {temporaries:?}");
    assert_whole(&images);
}

#[test]
fn sigterm_stops_gen_between_images_and_says_how_many_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gen");
    let gen = start_gen(&dir);
    wait_for_images(&dir, 3);
    kill_process(Pid::from_raw(gen.id() as i32).unwrap(), Signal::TERM).unwrap();
    let out = gen.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        crate::util::stderr(&out)
    );
    let (images, temporaries) = listing(&dir);
    assert!(temporaries.is_empty(), "left: {temporaries:?}");
    assert_whole(&images);
    let err = crate::util::stderr(&out);
    let expected = format!(
        "stopped by SIGTERM: {} of {COUNT} images written, the rest not started",
        images.len()
    );
    assert!(err.contains(&expected), "{expected:?} in {err}");
}
