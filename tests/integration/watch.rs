//! `shmpipe watch NAME` follows a run started elsewhere, from the counters in its block, and
//! ends with it; a missing name is a clear error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{assert_no_leaks, assets, os};

/// The block of run `pid`, once it exists.
fn block_of(pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(name) = crate::util::blocks_of(pid).pop() {
            return name;
        }
        assert!(Instant::now() < deadline, "the run creates its block");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn watch_follows_a_live_run_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Heavy enough (a wide blur, one worker) to last several seconds.
    let mut run = Command::new(crate::util::bin())
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
    let watch = Command::new(crate::util::bin())
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
    let out = Command::new(crate::util::bin())
        .args(["watch", "shmpipe-no-such-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot watch shmpipe-no-such-run"), "{err}");
}

/// `watch` counts from the run's start as the block records it, not from its own attach, and
/// its MP/s is run's: a watch that attaches a known pause after the run began shows at least
/// that pause as elapsed time, and at the end the same elapsed time and MP/s as the run's own
/// summary, within half that pause (a watch on its own clock would be short by all of it).
/// With `--resize`, both count the sources' pixels, not the smaller slots'.
#[test]
fn watch_shows_the_runs_own_clock_and_mp_per_s() {
    const PAUSE: Duration = Duration::from_secs(2);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let spawned = SystemTime::now();
    // One worker that holds one image five seconds: the run is still going when watch attaches.
    let run = Command::new(crate::util::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("-j"),
            os("1"),
            os("--ops"),
            os("invert"),
            os("--resize"),
            os("64x64"),
            os("--no-fsync"),
            os("--json"),
        ])
        .env("SHMPIPE_TEST_STALL", "rocket.jpg:5000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = run.id();
    let name = block_of(pid);
    // The run's clock started before its block existed, so before this moment.
    let block_seen = SystemTime::now();
    std::thread::sleep(PAUSE);
    let watch = Command::new(crate::util::bin())
        .args(["watch", &name, "--json"])
        .output()
        .unwrap();
    let watch_returned = SystemTime::now();
    let run = run.wait_with_output().unwrap();
    assert!(run.status.success());
    assert_no_leaks(pid);
    assert_eq!(
        watch.status.code(),
        Some(0),
        "{}",
        crate::util::stderr(&watch)
    );
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&watch.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let last = records.last().expect("watch prints records");
    assert_eq!(last["state"], "finished", "{records:?}");
    assert_eq!(last["images_done"], summary["images_ok"]);
    let started_ns = last["run_started_unix_ns"].as_u64().unwrap();
    let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    assert!(
        ns(spawned) <= started_ns && started_ns <= ns(block_seen),
        "the recorded start is the run's own"
    );
    let pause = PAUSE.as_secs_f64();
    for r in &records {
        let elapsed = r["elapsed_s"].as_f64().unwrap();
        assert!(
            elapsed >= pause,
            "elapsed counts from the run's start, {pause} s before watch attached: {r}"
        );
        assert!(
            elapsed
                <= watch_returned
                    .duration_since(spawned)
                    .unwrap()
                    .as_secs_f64(),
            "{r}"
        );
    }
    let watch_elapsed = last["elapsed_s"].as_f64().unwrap();
    let run_wall = summary["wall_s"].as_f64().unwrap();
    assert!(
        (watch_elapsed - run_wall).abs() < pause / 2.0,
        "watch's elapsed {watch_elapsed} s is run's {run_wall} s"
    );
    let megapixels = last["megapixels"].as_f64().unwrap();
    assert!(
        (megapixels - summary["source_megapixels"].as_f64().unwrap()).abs() < 0.01,
        "watch's {megapixels} MP are the sources' {}, not the resized {}",
        summary["source_megapixels"],
        summary["megapixels"]
    );
    let watch_rate = last["megapixels_per_s"].as_f64().unwrap();
    let run_rate = summary["megapixels_per_s"].as_f64().unwrap();
    assert!(
        (watch_rate - run_rate).abs() / run_rate < pause / 2.0 / run_wall,
        "watch's {watch_rate} MP/s is run's {run_rate} MP/s"
    );
}

/// A run stopped by Ctrl-C is not "finished": watch says it stopped before the end, in text
/// and in `--json`.
#[test]
fn watch_says_a_run_stopped_by_sigint_stopped_before_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // One worker held a minute at rocket.jpg: the run is stopped there.
    let mut run = Command::new(crate::util::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("-j"),
            os("1"),
            os("-q"),
        ])
        .env("SHMPIPE_TEST_STALL", "rocket.jpg")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = run.id();
    let name = block_of(pid);
    let watch = |json: bool| {
        let mut cmd = Command::new(crate::util::bin());
        cmd.args(["watch", &name]);
        if json {
            cmd.arg("--json");
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Each watch has attached once it has said its first line.
    let mut watching = Vec::new();
    for json in [false, true] {
        let mut child = watch(json);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a first line").unwrap();
        watching.push((child, lines, first));
    }
    crate::util::signal(pid, rustix::process::Signal::INT);
    assert_eq!(run.wait().unwrap().code(), Some(130));
    assert_no_leaks(pid);
    let mut last_lines = Vec::new();
    for (child, lines, first) in watching {
        let last = lines.map(Result::unwrap).last().unwrap_or(first);
        let out = crate::util::finish(child, "watch");
        assert!(out.status.success(), "{}", crate::util::stderr(&out));
        last_lines.push(last);
    }
    assert!(
        last_lines[0].contains(": stopped by SIGINT before the end"),
        "{}",
        last_lines[0]
    );
    assert!(!last_lines[0].contains("finished"), "{}", last_lines[0]);
    let record: serde_json::Value = serde_json::from_str(&last_lines[1]).unwrap();
    assert_eq!(record["state"], "stopped", "{record}");
    assert_eq!(record["stopped"], "by SIGINT before the end", "{record}");
}
