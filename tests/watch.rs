//! `shmpipe watch NAME` follows a run started elsewhere, from the counters in its block, and
//! ends with it; a missing name is a clear error.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{assert_no_leaks, assets, os};

#[test]
fn watch_follows_a_live_run_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Heavy enough (a wide blur, one worker) to last several seconds.
    let mut run = Command::new(common::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("--ops"),
            os("blur:25,blur:25"),
            os("-j"),
            os("1"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = run.id();
    let mut first = String::new();
    BufReader::new(run.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let name = first
        .split_whitespace()
        .find(|w| w.starts_with("shmpipe-"))
        .map(|w| w.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("run prints its block's name at start: {first:?}"));
    let watch = Command::new(common::bin())
        .args(["watch", &name])
        .output()
        .unwrap();
    assert!(run.wait().unwrap().success());
    assert_no_leaks(pid);
    assert_eq!(
        watch.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&watch.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&watch.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let done: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split(": ").last()?.split(" of ").next()?.parse().ok())
        .collect();
    let mut distinct = done.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "the counters advance while watching: {lines:?}"
    );
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "and never go back: {done:?}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.contains("finished: 10 of 10 images done, 0 failed"),
        "{last}"
    );
}

#[test]
fn watching_a_missing_block_exits_2() {
    let out = Command::new(common::bin())
        .args(["watch", "shmpipe-no-such-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot watch shmpipe-no-such-run"), "{err}");
}
