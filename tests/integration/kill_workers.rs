//! Kill a random worker with SIGKILL at a random moment, 20 times: every run still finishes,
//! its outputs are byte-identical to a clean run's, and nothing is left behind.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{assert_no_leaks, assets, files_under, os, workers_of};
use rustix::process::{kill_process, Pid, Signal};

const OPS: &str = "blur:4,sharpen,blur:4";
const KILLS: u32 = 20;

/// xorshift32: varied but reproducible timing and choice of victim.
fn next(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

#[test]
fn twenty_random_worker_kills_change_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let out = Command::new(crate::util::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            clean.as_os_str(),
            os("--ops"),
            os(OPS),
            os("-j"),
            os("2"),
            os("--quiet"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let expected: Vec<_> = files_under(&clean)
        .into_iter()
        .map(|f| (std::fs::read(clean.join(&f)).unwrap(), f))
        .collect();

    let mut rng = 0x9e37_79b9u32;
    let (mut landed, mut retried_total) = (0, 0);
    for round in 0..KILLS {
        let dir = tmp.path().join(format!("round{round}"));
        let child = Command::new(crate::util::bin())
            .args([
                os("run"),
                assets().as_os_str(),
                os("-o"),
                dir.as_os_str(),
                os("--ops"),
                os(OPS),
                os("-j"),
                os("2"),
                os("--json"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(30 + (next(&mut rng) % 250) as u64));
        let workers = workers_of(pid);
        if !workers.is_empty() {
            let victim = workers[next(&mut rng) as usize % workers.len()];
            if kill_process(Pid::from_raw(victim as i32).unwrap(), Signal::KILL).is_ok() {
                landed += 1;
            }
        }
        let output = child.wait_with_output().unwrap();
        assert_no_leaks(pid);
        assert_eq!(
            output.status.code(),
            Some(0),
            "round {round}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        retried_total += s["images_retried"].as_u64().unwrap();
        let got = files_under(&dir);
        assert_eq!(
            got,
            expected.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
            "round {round}: same files, no temporary file"
        );
        for (bytes, f) in &expected {
            assert!(
                std::fs::read(dir.join(f)).unwrap() == *bytes,
                "round {round}: {} differs from the clean run",
                f.display()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!("{landed} of {KILLS} kills landed on a live worker; {retried_total} images retried");
    assert!(
        landed >= KILLS / 2,
        "most kills hit a running worker ({landed})"
    );
    assert!(retried_total >= 1, "the summaries counted the retries");
}

/// A folder whose decoded size is twenty times the run's window (one slot per worker): workers
/// SIGKILLed at random moments, each replacement reuses its predecessor's slot, and every output
/// equals a clean run's, byte for byte.
#[test]
fn random_kills_in_a_window_twenty_times_smaller_than_the_folder_change_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for k in 0..40u32 {
        image::RgbImage::from_fn(400, 300, |x, y| {
            image::Rgb([(x * 3 + k) as u8, (y * 5 + k * 7) as u8, (x ^ y ^ k) as u8])
        })
        .save(input.join(format!("img{k:02}.png")))
        .unwrap();
    }
    let run = |dir: &std::path::Path| {
        Command::new(crate::util::bin())
            .args([
                os("run"),
                input.as_os_str(),
                os("-o"),
                dir.as_os_str(),
                os("--ops"),
                os(OPS),
                os("-j"),
                os("2"),
                os("--json"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let clean = tmp.path().join("clean");
    let output = run(&clean).wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let (slot, folder) = (
        s["window_slot_bytes"].as_u64().unwrap(),
        s["dataset_bytes"].as_u64().unwrap(),
    );
    assert_eq!(slot, 400 * 300 * 3);
    assert!(
        folder >= 20 * 2 * slot,
        "the folder is 20x the window of 2 slots"
    );
    let expected: Vec<_> = files_under(&clean)
        .into_iter()
        .map(|f| (std::fs::read(clean.join(&f)).unwrap(), f))
        .collect();
    let mut rng = 0x51ed_2701u32;
    let mut landed = 0;
    for round in 0..6 {
        let dir = tmp.path().join(format!("round{round}"));
        let child = run(&dir);
        let pid = child.id();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(20 + (next(&mut rng) % 120) as u64));
            let workers = workers_of(pid);
            if let Some(&victim) = workers.get(next(&mut rng) as usize % workers.len().max(1)) {
                landed += u32::from(
                    kill_process(Pid::from_raw(victim as i32).unwrap(), Signal::KILL).is_ok(),
                );
            }
        }
        let output = child.wait_with_output().unwrap();
        assert_no_leaks(pid);
        assert_eq!(output.status.code(), Some(0), "round {round}");
        for (bytes, f) in &expected {
            assert!(
                std::fs::read(dir.join(f)).unwrap() == *bytes,
                "round {round}: {} differs from the clean run",
                f.display()
            );
        }
        assert_eq!(files_under(&dir).len(), expected.len(), "round {round}");
    }
    assert!(landed >= 6, "kills landed on live workers ({landed})");
}
