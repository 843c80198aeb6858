//! A coordinator killed with SIGKILL: its workers follow it, its block is left stale, `ls` says
//! so, `clean` removes it, and a live run's block beside it is never touched.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    assets, blocks_dir, blocks_of, os, own_backing, shmpipe, signal, wait_for, workers_of,
};
use rustix::process::Signal;

/// Starts a run that stays alive: one worker stalls on camera.png.
fn start_stalled_run(out: &Path) -> Child {
    crate::util::command(&[
        os("run"),
        assets().as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("-j"),
        os("2"),
        os("--quiet"),
    ])
    .env(shmpipe_worker::hooks::STALL_ENV, "camera.png")
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

#[test]
fn a_killed_coordinators_block_is_stale_and_clean_removes_only_it() {
    let _backing = own_backing();
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
    assert_eq!(stale["state"], "stale", "{stale}");
    let running = find(&live_block).expect("ls shows the live block");
    assert_eq!(running["live"], true);
    assert_eq!(running["state"], "running", "{running}");
    // AGE is from the creation time in the header: known for both, not reset by writes.
    assert!(
        stale["age_s"].is_u64() && running["age_s"].is_u64(),
        "{listed}"
    );
    let text = String::from_utf8_lossy(&shmpipe(&["ls"]).stdout).into_owned();
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // NAME HELD(2 words) OWNER STATUS STATE IMAGES CLASSES AGE
    assert_eq!(row(&live_block)[5], "running", "{text}");
    assert_eq!(row(&live_block)[3], live_pid.to_string(), "{text}");
    assert_eq!(row(&victim_block)[5], "stale", "{text}");
    assert_eq!(
        row(&victim_block)[3],
        "-",
        "a killed run owns nothing: {text}"
    );

    let clean = shmpipe(&["clean"]);
    let said = String::from_utf8_lossy(&clean.stdout).into_owned();
    let removed = !blocks_dir().join(&victim_block).exists();
    if !removed {
        let _ = std::fs::remove_file(blocks_dir().join(&victim_block));
    }
    assert!(removed, "clean removed the stale block; it said {said:?}");
    assert!(
        said.contains(&victim_block),
        "clean names what it removed: {said:?}"
    );
    assert!(
        blocks_dir().join(&live_block).exists(),
        "the live block is untouched"
    );

    // rm refuses the live block too.
    let rm = shmpipe(&["rm", &live_block]);
    assert_eq!(rm.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&rm.stderr).contains("in use"));

    signal(live_pid, Signal::TERM);
    assert_eq!(live.wait().unwrap().code(), Some(143));
    crate::util::assert_no_leaks(live_pid);
}

#[test]
fn ls_shows_sizes_for_people_unless_asked_for_bytes() {
    let _backing = own_backing();
    let name = format!("ls-sizes-{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    let assets = assets();
    crate::util::ok(&[
        os("load"),
        assets.as_os_str(),
        os("--name"),
        os(&name),
        os("--resize"),
        os("64x48"),
        os("--quiet"),
    ]);
    let block = format!("shmpipe-{name}");
    // What the block holds: its allocated blocks (a block is fallocated whole, so here its size).
    let held = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(blocks_dir().join(&block))
            .unwrap()
            .blocks()
            * 512
    };
    let row = |args: &[&str]| {
        let out = shmpipe(args);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let header = text.lines().next().unwrap_or_default().to_string();
        let row = text
            .lines()
            .find(|l| l.starts_with(&block))
            .unwrap_or_else(|| panic!("{block} in {text}"))
            .to_string();
        (header, row)
    };
    let (header, human) = row(&["ls"]);
    assert!(header.contains(" HELD "), "{header}");
    // Rows fit an 80-column terminal.
    assert!(header.len() <= 80 && human.len() <= 80, "{header}\n{human}");
    let words: Vec<&str> = human.split_whitespace().collect();
    // NAME, then the size as a number and a unit.
    assert!(
        words[1].parse::<f64>().is_ok() && ["B", "KiB", "MiB", "GiB"].contains(&words[2]),
        "{human}"
    );
    assert_eq!(words[3], "-", "no owner for a kept dataset: {human}");
    assert_eq!(words[4], "kept", "{human}");
    assert_eq!(words[5], "ready", "{human}");
    // ... OWNER STATUS STATE IMAGES CLASSES AGE
    assert_eq!(words[7], "-", "no classes: {human}");
    assert!(
        words[8].ends_with('s') || words[8].ends_with('m'),
        "an age: {human}"
    );

    let (header, raw) = row(&["ls", "--bytes"]);
    assert!(header.contains(" BYTES "), "{header}");
    assert_eq!(
        raw.split_whitespace().nth(1),
        Some(held.to_string().as_str()),
        "{raw}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&crate::util::ok(&["ls", "--json"])).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == block.as_str())
        .expect("listed");
    assert_eq!(entry["held_bytes"], held);
    assert!(entry["bytes"].as_u64().unwrap() > 0);
}

/// Issue 27: kept datasets never expired. `clean --older-than AGE` removes the kept datasets
/// created longer ago than AGE that nobody holds, names each, and leaves one in use (here a
/// Python handle) until it is let go; younger ones stay.
#[test]
fn clean_older_than_removes_old_datasets_nobody_holds() {
    use std::io::{BufRead, Write};
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(input.join("a.png"))
        .unwrap();
    let (free, held) = (
        format!("oldfree{}", std::process::id()),
        format!("oldheld{}", std::process::id()),
    );
    for name in [&free, &held] {
        crate::util::ok(&[
            os("load"),
            input.as_os_str(),
            os("--name"),
            os(name),
            os("-q"),
        ]);
    }
    let young = crate::util::ok(&[os("clean"), os("--older-than"), os("1h")]);
    assert!(!young.contains("removed dataset"), "{young}");
    assert!(blocks_dir().join(format!("shmpipe-{free}")).exists());

    let mut reader = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys, shmpipe\nds = shmpipe.attach({held:?}, backing={:?})\nprint('held', flush=True)\nsys.stdin.readline()\nds.close()\n",
            blocks_dir().display().to_string()
        ))
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(reader.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    std::thread::sleep(Duration::from_millis(2100));
    let said = crate::util::ok(&[os("clean"), os("--older-than"), os("1s")]);
    assert!(
        said.contains(&format!("removed dataset shmpipe-{free}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("left dataset shmpipe-{held}: in use")),
        "{said}"
    );
    assert!(!blocks_dir().join(format!("shmpipe-{free}")).exists());
    assert!(blocks_dir().join(format!("shmpipe-{held}")).exists());

    reader.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(reader.wait().unwrap().success());
    let said = crate::util::ok(&[os("clean"), os("--older-than"), os("1s")]);
    assert!(
        said.contains(&format!("removed dataset shmpipe-{held}")),
        "{said}"
    );
    assert!(!blocks_dir().join(format!("shmpipe-{held}")).exists());
}
