//! A coordinator killed with SIGKILL: its workers follow it, its block is left stale, `ls` says
//! so, `clean` removes it, and a live run's block beside it is never touched.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assets, blocks_of, os, workers_of};
use rustix::process::{kill_process, Pid, Signal};

/// Starts a run that stays alive: one worker stalls on camera.png.
fn start_stalled_run(out: &Path) -> Child {
    Command::new(common::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("-j"),
            os("2"),
            os("--quiet"),
        ])
        .env(shmpipe_worker::worker::STALL_ENV, "camera.png")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn shmpipe(args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

fn signal(pid: u32, sig: Signal) {
    kill_process(Pid::from_raw(pid as i32).unwrap(), sig).unwrap();
}

#[test]
fn a_killed_coordinators_block_is_stale_and_clean_removes_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut victim = start_stalled_run(&tmp.path().join("a"));
    let mut live = start_stalled_run(&tmp.path().join("b"));
    let (victim_pid, live_pid) = (victim.id(), live.id());
    // Each run's other worker may finish the rest and leave before the second run is up; the
    // one stalled on camera.png stays.
    wait_for("both runs' workers", || {
        !workers_of(victim_pid).is_empty()
            && !workers_of(live_pid).is_empty()
            && !blocks_of(victim_pid).is_empty()
            && !blocks_of(live_pid).is_empty()
    });
    let victim_block = blocks_of(victim_pid).pop().expect("the victim's block");
    let live_block = blocks_of(live_pid).pop().expect("the live run's block");

    signal(victim_pid, Signal::KILL);
    victim.wait().unwrap();
    let killed_at = Instant::now();
    wait_for("the victim's workers to die", || {
        workers_of(victim_pid).is_empty()
    });
    assert!(
        killed_at.elapsed() < Duration::from_secs(2),
        "workers followed their coordinator promptly"
    );

    let ls = shmpipe(&["ls", "--json"]);
    assert_eq!(ls.status.code(), Some(0));
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let find = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
    };
    let stale = find(&victim_block).expect("ls shows the stale block");
    assert_eq!(stale["live"], false);
    assert_eq!(stale["owner_pid"], victim_pid);
    assert_eq!(
        find(&live_block).expect("ls shows the live block")["live"],
        true
    );

    let clean = shmpipe(&["clean"]);
    let said = String::from_utf8_lossy(&clean.stdout).into_owned();
    let removed = !Path::new("/dev/shm").join(&victim_block).exists();
    if !removed {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(&victim_block));
    }
    assert!(removed, "clean removed the stale block; it said {said:?}");
    assert!(
        said.contains(&victim_block),
        "clean names what it removed: {said:?}"
    );
    assert!(
        Path::new("/dev/shm").join(&live_block).exists(),
        "the live block is untouched"
    );

    // rm refuses the live block too.
    let rm = shmpipe(&["rm", &live_block]);
    assert_eq!(rm.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&rm.stderr).contains("in use"));

    signal(live_pid, Signal::TERM);
    assert_eq!(live.wait().unwrap().code(), Some(143));
    common::assert_no_leaks(live_pid);
}
