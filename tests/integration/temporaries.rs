//! Temporary outputs carry their run's block name: a run removes only its own, and the
//! temporaries of runs that are over (killed: block stale or gone) are removed by the next run
//! into the folder and by `clean`, never those of a run that is alive.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    blocks_dir, blocks_of, files_under, os, own_backing, run, signal, stderr, wait_for, workers_of,
};
use rustix::process::{kill_process, Pid, Signal};
use shmpipe_worker::codec::temp_prefix;

/// Removes blocks (from this test's folder for them) and stops processes when dropped, even after a failed assertion.
#[derive(Default)]
struct Cleanup {
    blocks: Vec<String>,
    runs: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for run in &mut self.runs {
            let _ = run.kill();
            let _ = run.wait();
        }
        for block in &self.blocks {
            let _ = std::fs::remove_file(blocks_dir().join(block));
        }
    }
}

fn image(path: &Path, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([x as u8 ^ seed, y as u8, seed.wrapping_mul(7)])
    })
    .save(path)
    .unwrap();
}

/// Starts `run IN -o OUT -j 1`, its worker held (`SHMPIPE_TEST_STALL`) at `held`; returns once
/// the run's block exists and its worker is at work.
fn start_held_run(input: &Path, out: &Path, held: &str, cleanup: &mut Cleanup) -> (u32, String) {
    let child = crate::util::command(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("-j"),
        os("1"),
        os("-q"),
    ])
    .env(shmpipe_worker::hooks::STALL_ENV, format!("{held}:60000"))
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let pid = child.id();
    cleanup.runs.push(child);
    wait_for("the run's worker", || workers_of(pid).len() == 1);
    let block = blocks_of(pid).pop().expect("the run's block");
    cleanup.blocks.push(block.clone());
    (pid, block)
}

fn kill(pid: u32, cleanup: &mut Cleanup) {
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL).unwrap();
    for run in cleanup.runs.iter_mut().filter(|r| r.id() == pid) {
        run.wait().unwrap();
    }
    wait_for("the worker to follow its coordinator", || {
        workers_of(pid).is_empty()
    });
}

/// A temporary output of `target` as a worker of the run `block` leaves it when killed in the
/// middle of writing it.
fn left_temporary(target: &Path, block: &str) -> PathBuf {
    let mut name = temp_prefix(target, block);
    name.push("Zq81xP");
    let path = target.parent().unwrap().join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"half an image").unwrap();
    path
}

fn temporaries_under(root: &Path) -> Vec<PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(".shmpipe-tmp-"))
        .collect()
}

#[test]
fn a_killed_runs_temporaries_are_removed_by_the_next_run() {
    // A test of its own for blocks: another test's sweep would take this one's stale block
    // (and leave its temporary, made after the kill) before the command under test looks.
    let _backing = own_backing();
    let mut cleanup = Cleanup::default();
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    image(&input.join("held.png"), 1);
    image(&input.join("sub/b.png"), 2);
    image(&input.join("sub/c.png"), 3);
    let (pid, block) = start_held_run(&input, &out, "held.png", &mut cleanup);
    kill(pid, &mut cleanup);
    // What its workers were writing when they died, and one of a run whose block is long gone.
    left_temporary(&out.join("held.png"), &block);
    left_temporary(&out.join("sub/b.png"), &block);
    left_temporary(&out.join("sub/c.png"), "shmpipe-999999999-0badcafe");
    assert_eq!(temporaries_under(&out).len(), 3);

    let rerun = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--skip-existing"),
        os("--json"),
    ]);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert_eq!(temporaries_under(&out), Vec::<PathBuf>::new());
    assert!(!blocks_dir().join(&block).exists(), "stale block swept");
    for name in ["held.png", "sub/b.png", "sub/c.png"] {
        assert!(out.join(name).is_file(), "{name} written");
    }
}

#[test]
fn clean_removes_a_stale_blocks_temporaries_and_those_in_named_folders() {
    // A test of its own for blocks: another test's sweep would take this one's stale block
    // (and leave its temporary, made after the kill) before the command under test looks.
    let _backing = own_backing();
    let mut cleanup = Cleanup::default();
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    image(&input.join("held.png"), 4);
    let (pid, block) = start_held_run(&input, &out, "held.png", &mut cleanup);
    kill(pid, &mut cleanup);
    let stale = left_temporary(&out.join("held.png"), &block);

    let clean = crate::util::command(&["clean"]).output().unwrap();
    let said = String::from_utf8_lossy(&clean.stdout);
    assert!(
        !stale.exists(),
        "the stale block's temporary is removed: {said}"
    );
    assert!(!blocks_dir().join(&block).exists());

    // A run whose block no longer exists: `clean OUTPUT_DIR` finds its temporaries.
    let gone = left_temporary(&out.join("held.png"), "shmpipe-999999999-0badcafe");
    crate::util::command(&[os("clean"), out.as_os_str()])
        .output()
        .unwrap();
    assert!(!gone.exists());
}

#[test]
fn a_crashed_worker_removes_only_its_own_runs_temporary() {
    let mut cleanup = Cleanup::default();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Run B is alive, held, and in the middle of writing shared.png into the same folder.
    let input_b = tmp.path().join("b");
    image(&input_b.join("held.png"), 5);
    let (pid_b, block_b) = start_held_run(&input_b, &out, "held.png", &mut cleanup);
    let in_flight = left_temporary(&out.join("shared.png"), &block_b);

    // Run A writes shared.png too; its worker crashes holding it once, then it is redone.
    let input_a = tmp.path().join("a");
    image(&input_a.join("shared.png"), 6);
    let child = Command::new(crate::util::bin())
        .args([
            os("run"),
            input_a.as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("--json"),
        ])
        .env(shmpipe_worker::hooks::CRASH_ENV, "shared.png:1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_a = child.id();
    let a = child.wait_with_output().unwrap();
    crate::util::assert_no_leaks(pid_a);
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    let summary: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(summary["images_retried"], 1, "the crash happened");
    assert!(out.join("shared.png").is_file());
    assert_eq!(
        std::fs::read(&in_flight).unwrap(),
        b"half an image",
        "run B's temporary is intact"
    );

    kill_process(Pid::from_raw(pid_b as i32).unwrap(), Signal::TERM).unwrap();
    for run in cleanup.runs.iter_mut() {
        assert_eq!(run.wait().unwrap().code(), Some(143));
    }
    crate::util::assert_no_leaks(pid_b);
    assert!(!blocks_dir().join(&block_b).exists());
}

/// A dataset of `count` generated JPEGs, loaded as `name`.
fn loaded_dataset(tmp: &Path, name: &str, count: u32) {
    let input = tmp.join("in");
    let gen = run(&[
        os("gen"),
        input.as_os_str(),
        os("--count"),
        os(&count.to_string()),
        os("--size"),
        os("1600x1200"),
    ]);
    assert!(gen.status.success(), "{}", stderr(&gen));
    let load = run(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(name),
        os("-q"),
    ]);
    assert!(load.status.success(), "{}", stderr(&load));
}

/// Starts `args` (a save or an export) and returns it once a temporary output of it shows under
/// `folder`.
fn started_writing(args: &[&std::ffi::OsStr], folder: &Path) -> (Child, u32) {
    let child = Command::new(crate::util::bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("a temporary output", || {
        std::fs::read_dir(folder).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".shmpipe-tmp-"))
        })
    });
    (child, pid)
}

/// `save NAME -o OUT -j 1`, one image at a time.
fn save_args<'a>(name: &'a str, out: &'a Path) -> [&'a std::ffi::OsStr; 6] {
    [
        os("save"),
        os(name),
        os("-o"),
        out.as_os_str(),
        os("-j"),
        os("1"),
    ]
}

/// Starts `args` and stops it (SIGSTOP) at a moment it holds a temporary under `folder`; gives
/// those temporaries. An image can be finished and renamed between seeing its temporary and the
/// signal (a JPEG is written in milliseconds), so it stops the process, looks, and lets it go on
/// until it catches one.
fn stopped_while_writing(args: &[&std::ffi::OsStr], folder: &Path) -> (Child, u32, Vec<PathBuf>) {
    let (child, pid) = started_writing(args, folder);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        signal(pid, Signal::STOP);
        let stopped = loop {
            match process_state(pid) {
                Some('T') => break true,
                Some('Z') | None => break false,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        assert!(stopped, "it finished before it was caught writing");
        let held = temporaries_under(folder);
        if !held.is_empty() {
            return (child, pid, held);
        }
        assert!(
            Instant::now() < deadline,
            "never caught holding a temporary"
        );
        signal(pid, Signal::CONT);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The state letter of /proc/PID/stat (R, S, T, Z, ...), None once the process is reaped.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// SIGKILLs `args` while it holds a temporary under `folder`; gives the temporaries it left.
fn killed_while_writing(args: &[&std::ffi::OsStr], folder: &Path) -> Vec<PathBuf> {
    let (mut child, pid, _) = stopped_while_writing(args, folder);
    signal(pid, Signal::KILL);
    child.wait().unwrap();
    temporaries_under(folder)
}

/// `save` killed (SIGKILL) and stopped (SIGTERM) while it writes: a stop signal ends it between
/// images with exit 143 and no temporary left; what a SIGKILL leaves is removed by `clean OUT`
/// and by the next save; and the save that follows writes every image, as an uninterrupted one.
#[test]
fn a_killed_save_leaves_nothing_that_clean_or_the_next_save_does_not_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("tsave{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    loaded_dataset(tmp.path(), &name, 12);
    let reference = tmp.path().join("reference");
    let full = run(&[os("save"), os(&name), os("-o"), reference.as_os_str()]);
    assert!(full.status.success(), "{}", stderr(&full));
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let save = save_args(&name, &out);

    let (child, pid) = started_writing(&save, &out);
    signal(pid, Signal::TERM);
    let stopped = child.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(143), "{}", stderr(&stopped));
    assert!(stderr(&stopped).contains("stopped by SIGTERM"));
    assert_eq!(temporaries_under(&out), Vec::<PathBuf>::new());

    assert!(
        !killed_while_writing(&save, &out).is_empty(),
        "SIGKILL left no temporary"
    );
    let cleaned = run(&[os("clean"), out.as_os_str()]);
    assert!(cleaned.status.success(), "{}", stderr(&cleaned));
    assert_eq!(temporaries_under(&out), Vec::<PathBuf>::new());

    let left = killed_while_writing(&save, &out);
    assert!(!left.is_empty(), "SIGKILL left no temporary");
    let again = run(&save);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(temporaries_under(&out), Vec::<PathBuf>::new());
    assert_eq!(files_under(&out), files_under(&reference));
    for file in files_under(&reference) {
        assert_eq!(
            std::fs::read(out.join(&file)).unwrap(),
            std::fs::read(reference.join(&file)).unwrap(),
            "{}",
            file.display()
        );
    }
}

/// `clean OUT` while a save is stopped in the middle of writing an image leaves that save's
/// temporary alone (its owner is alive), and the save then finishes every image.
#[test]
fn clean_never_takes_a_live_saves_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("tlive{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    loaded_dataset(tmp.path(), &name, 4);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let save = save_args(&name, &out);
    let (child, pid, held) = stopped_while_writing(&save, &out);
    let cleaned = run(&[os("clean"), out.as_os_str()]);
    let kept = temporaries_under(&out);
    signal(pid, Signal::CONT);
    let saved = child.wait_with_output().unwrap();
    assert!(cleaned.status.success(), "{}", stderr(&cleaned));
    assert!(!held.is_empty() && kept == held, "clean took {held:?}");
    assert!(saved.status.success(), "{}", stderr(&saved));
    assert_eq!(files_under(&out).len(), 4);
    assert_eq!(temporaries_under(&out), Vec::<PathBuf>::new());
}

/// Exports `name` to `folder/file`, SIGKILLs it while it writes (no file, one temporary left),
/// and exports again: the file is written and no temporary is left. Gives the file.
fn killed_then_exported_again(name: &str, folder: &Path, file: &str) -> PathBuf {
    std::fs::create_dir_all(folder).unwrap();
    let file = folder.join(file);
    let export = [os("export"), os(name), file.as_os_str()];
    let left = killed_while_writing(&export, folder);
    assert!(!file.exists(), "a killed export wrote its file");
    assert_eq!(left.len(), 1);
    let again = run(&export);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(temporaries_under(folder), Vec::<PathBuf>::new());
    file
}

/// `export` SIGKILLed while it writes leaves its temporary beside the file; the next export to
/// that file removes it and writes the whole array.
#[test]
fn a_killed_exports_temporary_is_removed_by_the_next_export() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("texp{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    loaded_dataset(tmp.path(), &name, 12);
    let file = killed_then_exported_again(&name, &tmp.path().join("npy"), "all.npy");
    let header = 128;
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        header + 12 * 1200 * 1600 * 3
    );
}

/// The same for an `.npz` of a dataset of two shapes (pixels, offsets and shapes): the killed
/// export leaves no file, the next removes the temporary and writes every image, each its shape.
#[test]
fn a_killed_ragged_npz_exports_temporary_is_removed_by_the_next_export() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("texpr{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    let input = tmp.path().join("in");
    for (folder, size) in [("wide", "1600x1200"), ("tall", "1200x1600")] {
        let gen = run(&[
            os("gen"),
            input.join(folder).as_os_str(),
            os("--count"),
            os("6"),
            os("--size"),
            os(size),
        ]);
        assert!(gen.status.success(), "{}", stderr(&gen));
    }
    let load = run(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("-q"),
    ]);
    assert!(load.status.success(), "{}", stderr(&load));
    let file = killed_then_exported_again(&name, &tmp.path().join("npz"), "all.npz");
    let shapes = crate::python_loader::python(
        &crate::python_loader::pythons()[0],
        &format!(
            "import json, shmpipe\nsaved = shmpipe.read_export({file:?})\nprint(json.dumps([list(i.shape) for i in saved.images]))\n"
        ),
    );
    let mut shapes: Vec<String> = shapes
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    shapes.sort();
    shapes.dedup();
    assert_eq!(shapes, ["[1200,1600,3]", "[1600,1200,3]"]);
}

/// A temporary file left in a folder that later serves as input (a killed gen's, or a save's
/// into what becomes the next run's input) is part of an image at most: the run counts it as
/// skipped, never as an image, failed or otherwise, and leaves it where it is.
#[test]
fn a_temporary_left_in_an_input_folder_is_not_an_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    image(&input.join("a.png"), 1);
    image(&input.join("b.png"), 2);
    let whole = std::fs::read(input.join("b.png")).unwrap();
    let half = left_temporary(&input.join("c.png"), "shmpipe-999999999-w");
    std::fs::write(&half, &whole[..whole.len() / 2]).unwrap();

    let done = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--json"),
    ]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(summary["images_planned"], 2, "{summary}");
    assert_eq!(summary["images_ok"], 2, "{summary}");
    assert_eq!(summary["images_failed"], 0, "{summary}");
    assert_eq!(summary["files_skipped"], 1, "{summary}");
    assert_eq!(temporaries_under(&out), Vec::<PathBuf>::new());
    assert_eq!(std::fs::read(&half).unwrap(), &whole[..whole.len() / 2]);
}

/// Whether process `pid` holds a lock on the file at `path` (from /proc/locks: "1: FLOCK
/// ADVISORY WRITE PID MAJ:MIN:INODE ...").
fn locked_by(pid: u32, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 5
            && fields[4] == pid.to_string()
            && fields[5].rsplit(':').next() == Some(meta.ino().to_string().as_str())
    })
}

/// Issue item 11: a `run --keep NAME --backing DIR -o OUT` names its temporaries after its block,
/// `shmpipe-NAME`, which has no pid and lives in DIR, not in /dev/shm. A plain run into the same
/// OUT looked for that block in /dev/shm only, found nothing and took the live run's temporaries
/// for left-overs (6 of 90 images of the first run failed). Here the first run's worker is
/// stopped while it holds a temporary; the second run leaves it, and the first fails no image.
#[test]
fn a_live_kept_runs_temporaries_in_a_backing_folder_survive_another_run() {
    let mut cleanup = Cleanup::default();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let gen = run(&[
        os("gen"),
        input.as_os_str(),
        os("--count"),
        os("12"),
        os("--size"),
        os("1600x1200"),
    ]);
    assert!(gen.status.success(), "{}", stderr(&gen));
    let backing = tmp.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let out = tmp.path().join("out");
    let name = format!("tkeepbk{}", std::process::id());
    let child = Command::new(crate::util::bin())
        .args([
            os("run"),
            input.as_os_str(),
            os("--keep"),
            os(&name),
            os("--backing"),
            backing.as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("-j"),
            os("1"),
            os("--json"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    cleanup.runs.push(child);
    // Its worker stopped (SIGSTOP) at a moment it holds a temporary: look, and let it go on
    // until one is caught (a JPEG is finished and renamed in milliseconds).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (worker, held) = loop {
        assert!(
            Instant::now() < deadline,
            "never caught holding a temporary"
        );
        let Some(&worker) = workers_of(pid).first() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        if kill_process(Pid::from_raw(worker as i32).unwrap(), Signal::STOP).is_err() {
            continue;
        }
        let stopped = loop {
            match process_state(worker) {
                Some('T') => break true,
                Some('Z') | None => break false,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        // Only a temporary its writer has locked is one the protocol keeps from a sweep: one
        // caught between its creation and the writer's flock may be swept, and the writer then
        // makes another (`codec::held_temporary`).
        let held = temporaries_under(&out);
        if stopped && !held.is_empty() && held.iter().all(|h| locked_by(worker, &out.join(h))) {
            break (worker, held);
        }
        let _ = kill_process(Pid::from_raw(worker as i32).unwrap(), Signal::CONT);
        std::thread::sleep(Duration::from_millis(2));
    };

    // A plain run into the same folder, meanwhile.
    let other = tmp.path().join("other");
    image(&other.join("x.png"), 9);
    let second = run(&[
        os("run"),
        other.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("-q"),
    ]);
    let kept = temporaries_under(&out);
    let _ = kill_process(Pid::from_raw(worker as i32).unwrap(), Signal::CONT);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        held.iter().all(|h| kept.contains(h)),
        "the second run took the live run's temporaries {held:?}: {kept:?} left"
    );

    let first = cleanup.runs.pop().unwrap().wait_with_output().unwrap();
    crate::util::assert_no_leaks(pid);
    let rm = run(&[os("rm"), os(&name), os("--backing"), backing.as_os_str()]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let summary: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(summary["images_failed"], 0, "{summary}");
    assert_eq!(summary["images_ok"], 12, "{summary}");
    assert_eq!(temporaries_under(&out), Vec::<PathBuf>::new());
}
