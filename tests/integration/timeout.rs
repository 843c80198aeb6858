//! `--image-timeout`: a worker that holds one image too long is killed, the image is retried by
//! its replacement, and the run finishes with the outputs a clean run gives.

use crate::util::{assets, files_under, os, run_env};

fn run_with(out: &std::path::Path, env: Option<(&str, &str)>) -> std::process::Output {
    let input = assets();
    let args = [
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--ops"),
        os("invert"),
        os("-j"),
        os("2"),
        os("--image-timeout"),
        os("2"),
        os("--json"),
    ];
    run_env(&args, env.as_slice())
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
        Some((shmpipe_worker::hooks::SIGSTOP_ENV, "rocket.jpg")),
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        crate::util::stderr(&output)
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
    let output = run_with(&out, Some((shmpipe_worker::hooks::STALL_ENV, "camera.png")));
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        crate::util::stderr(&output)
    );
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

/// A dataset `name` loaded from 6 generated JPEGs in `tmp`, with `blur:2` applied by two
/// workers under `--image-timeout 1` and the hooks in `env`; gives apply's output and the saved
/// folder.
fn applied(
    tmp: &std::path::Path,
    name: &str,
    env: &[(&str, &str)],
) -> (std::process::Output, std::path::PathBuf) {
    let input = tmp.join("in");
    if !input.exists() {
        let gen = run_env(
            &[
                os("gen"),
                input.as_os_str(),
                os("--count"),
                os("6"),
                os("--size"),
                os("320x240"),
            ],
            &[],
        );
        assert!(gen.status.success(), "{}", crate::util::stderr(&gen));
    }
    let load = run_env(
        &[
            os("load"),
            input.as_os_str(),
            os("--name"),
            os(name),
            os("-q"),
        ],
        &[],
    );
    assert!(load.status.success(), "{}", crate::util::stderr(&load));
    let args = [
        os("apply"),
        os(name),
        os("--ops"),
        os("blur:2"),
        os("-j"),
        os("2"),
        os("--image-timeout"),
        os("1"),
    ];
    let apply = run_env(&args, env);
    let out = tmp.join(format!("saved-{name}"));
    run_env(&[os("save"), os(name), os("-o"), out.as_os_str()], &[]);
    (apply, out)
}

#[test]
fn apply_kills_a_stuck_worker_rebuilds_its_image_and_fails_one_that_always_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let names = [
        format!("tref{pid}"),
        format!("tstop{pid}"),
        format!("thang{pid}"),
    ];
    let _datasets: Vec<crate::util::Dataset> =
        names.iter().cloned().map(crate::util::Dataset).collect();
    let (reference, expected) = applied(tmp.path(), &names[0], &[]);
    assert!(
        reference.status.success(),
        "{}",
        crate::util::stderr(&reference)
    );

    // Stopped once, in the middle of the image: killed, the image rebuilt from its source.
    let (stopped, out) = applied(
        tmp.path(),
        &names[1],
        &[(shmpipe_worker::hooks::SIGSTOP_ENV, "img000002.jpg")],
    );
    assert!(
        stopped.status.success(),
        "{}",
        crate::util::stderr(&stopped)
    );
    assert!(
        crate::util::stderr(&stopped).contains("Signaled(9)"),
        "the stopped worker was not killed: {}",
        crate::util::stderr(&stopped)
    );
    let files = files_under(&expected);
    assert_eq!(files.len(), 6);
    assert_eq!(files_under(&out), files);
    for file in &files {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(expected.join(file)).unwrap(),
            "{}",
            file.display()
        );
    }

    // Hangs every time: marked failed after three tries; the others are applied.
    let (hung, out) = applied(
        tmp.path(),
        &names[2],
        &[(shmpipe_worker::hooks::STALL_ENV, "img000002.jpg:30000")],
    );
    assert_eq!(
        hung.status.code(),
        Some(1),
        "{}",
        crate::util::stderr(&hung)
    );
    let said = String::from_utf8_lossy(&hung.stdout);
    assert!(
        said.contains("img000002.jpg: no result within 1 s, 3 times (--image-timeout)"),
        "{said}"
    );
    let saved = files_under(&out);
    assert_eq!(saved.len(), 5);
    assert!(!saved.iter().any(|f| f.ends_with("img000002.jpg")));
    for file in &saved {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(expected.join(file)).unwrap(),
            "{}",
            file.display()
        );
    }
}
