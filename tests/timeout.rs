//! `--image-timeout`: a worker that holds one image too long is killed, the image is retried by
//! its replacement, and the run finishes with the outputs a clean run gives.

mod common;

use common::{assets, files_under, os};
use std::process::{Command, Stdio};

fn run_with(out: &std::path::Path, env: Option<(&str, &str)>) -> std::process::Output {
    let mut cmd = Command::new(common::bin());
    cmd.args([
        os("run"),
        assets().as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--ops"),
        os("invert"),
        os("-j"),
        os("2"),
        os("--image-timeout"),
        os("2"),
        os("--json"),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    common::assert_no_leaks(pid);
    output
}

#[test]
fn a_stopped_worker_is_killed_its_image_retried_and_the_run_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let stalled = tmp.path().join("stalled");
    let reference = run_with(&clean, None);
    assert_eq!(reference.status.code(), Some(0));
    // The worker that takes rocket.jpg stops itself with SIGSTOP: hung, not dead.
    let output = run_with(
        &stalled,
        Some((shmpipe_worker::worker::SIGSTOP_ENV, "rocket.jpg")),
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        common::stderr(&output)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["images_failed"], 0);
    assert_eq!(summary["images_retried"], 1, "{summary}");
    assert!(summary["worker_restarts"].as_u64().unwrap() >= 1);
    let want = files_under(&clean);
    let got = files_under(&stalled);
    assert_eq!(want, got);
    assert_eq!(want.len(), 10);
    for file in &want {
        assert_eq!(
            std::fs::read(clean.join(file)).unwrap(),
            std::fs::read(stalled.join(file)).unwrap(),
            "{} differs from a clean run",
            file.display()
        );
    }
}

#[test]
fn an_image_that_always_hangs_is_reported_and_the_others_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // camera.png sleeps 60 s every time it is tried: three timeouts, then it is failed.
    let output = run_with(
        &out,
        Some((shmpipe_worker::worker::STALL_ENV, "camera.png")),
    );
    assert_eq!(output.status.code(), Some(1), "{}", common::stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["images_failed"], 1, "{summary}");
    let reason = summary["failures"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("--image-timeout"), "{reason}");
    assert!(summary["failures"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("camera.png"));
    assert_eq!(summary["images_ok"], 9, "{summary}");
}
