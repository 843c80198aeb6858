//! Files in /dev/shm with our names are opened only if they are what they claim to be: a
//! symbolic link is never followed (by `ls`, `clean`, `rm` or an attach), another user's file is
//! listed and left alone, and neither stops `clean` from removing this user's stale blocks.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::{blocks_dir, blocks_of, os, own_backing, shmpipe, wait_for, workers_of};
use rustix::process::{kill_process, Pid, Signal};

/// Removes the named files from /dev/shm when dropped, even when an assertion failed.
struct Remove(Vec<PathBuf>);

impl Drop for Remove {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where the test keeps its blocks (its own `--backing` folder): a `load` or `run` sweeps every
/// stale block of ours at its start, and `clean` removes them, so no other test may look there.
fn shm(name: &str) -> PathBuf {
    blocks_dir().join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_symlink_with_a_block_name_is_never_followed() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("precious");
    std::fs::write(&target, b"not a block, and not to be touched").unwrap();
    let before = std::fs::metadata(&target).unwrap();
    let name = format!("shmpipe-evil-{}", std::process::id());
    let link = shm(&name);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let _guard = Remove(vec![link.clone()]);

    let ls = shmpipe(&[os("ls")]);
    let listed = text(&ls.stdout);
    let row = listed.lines().find(|l| l.contains(&name));
    assert!(
        row.is_some_and(|r| r.contains("foreign") && r.contains("symbolic link")),
        "ls lists it as foreign: {listed}"
    );
    let ls = shmpipe(&[os("ls"), os("--json")]);
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name.as_str())
        .expect("ls --json lists it");
    assert_eq!(entry["status"], "foreign");

    let clean = shmpipe(&[os("clean")]);
    assert_eq!(clean.status.code(), Some(1), "{}", text(&clean.stderr));
    assert!(
        text(&clean.stderr).contains(&name),
        "{}",
        text(&clean.stderr)
    );

    let rm = shmpipe(&[os("rm"), os(&name)]);
    assert_eq!(rm.status.code(), Some(2));
    assert!(
        text(&rm.stderr).contains("symbolic link"),
        "{}",
        text(&rm.stderr)
    );

    // Attach, as `save` and a worker do.
    let saved = tmp.path().join("saved");
    let save = shmpipe(&[os("save"), os(&name), os("-o"), saved.as_os_str()]);
    assert_eq!(save.status.code(), Some(2), "{}", text(&save.stderr));
    let parent = std::process::id().to_string();
    let worker = shmpipe(&[
        os("worker"),
        os("--block"),
        os(&name),
        os("--id"),
        os("0"),
        os("--parent"),
        os(&parent),
    ]);
    assert!(!worker.status.success(), "a worker does not attach to it");

    assert!(
        std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
        "the symlink is still there"
    );
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"not a block, and not to be touched"
    );
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec()),
        (before.len(), before.mtime(), before.mtime_nsec()),
        "the target is untouched"
    );
}

/// Starts a run whose only worker stalls on its only image, so it stays alive until killed.
fn start_stalled_run(input: &Path) -> Child {
    image::RgbImage::from_pixel(16, 16, image::Rgb([9, 99, 199]))
        .save(input.join("held.png"))
        .unwrap();
    crate::util::command(&[os("run"), input.as_os_str(), os("-j"), os("1"), os("-q")])
        .env(shmpipe_worker::hooks::STALL_ENV, "held.png:60000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn another_users_file_does_not_stop_clean_from_removing_a_stale_block() {
    let _backing = own_backing();
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: making a file owned by another user needs root");
        return;
    }
    let foreign_name = format!("shmpipe-foreign-{}", std::process::id());
    let foreign = shm(&foreign_name);
    std::fs::write(&foreign, b"someone else's").unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let mut guard = Remove(vec![foreign.clone()]);

    // A stale block of ours: its coordinator killed while its worker held an image.
    let tmp = tempfile::tempdir().unwrap();
    let mut run = start_stalled_run(tmp.path());
    let pid = run.id();
    wait_for("the worker", || workers_of(pid).len() == 1);
    let block = blocks_of(pid).pop().expect("the run's block");
    guard.0.push(shm(&block));
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL).unwrap();
    run.wait().unwrap();
    wait_for("the worker to follow", || workers_of(pid).is_empty());

    let clean = shmpipe(&[os("clean")]);
    let said = text(&clean.stderr);
    assert_eq!(clean.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&foreign_name) && said.contains("owned by uid 65534"),
        "clean names the foreign file: {said}"
    );
    assert!(!shm(&block).exists(), "the stale block is removed");
    assert!(
        text(&clean.stdout).contains(&block),
        "{}",
        text(&clean.stdout)
    );
    assert_eq!(std::fs::read(&foreign).unwrap(), b"someone else's");

    // The sweep at the start of a run is not stopped by it either, and says nothing under -q.
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    image::RgbImage::new(8, 8)
        .save(input.join("a.png"))
        .unwrap();
    let out = crate::util::run(&[os("run"), input.as_os_str(), os("-q")]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "");
    assert!(foreign.exists());
}

/// Issue 22: `ls` run by another user printed "Permission denied" for each of our blocks (mode
/// 0600: it cannot even open them), then "no shmpipe blocks", exit 1. It lists them as another
/// user's, as it lists any file not ours, and says nothing is wrong.
#[test]
fn ls_by_another_user_lists_blocks_it_cannot_open_as_theirs() {
    let _backing = own_backing();
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running as another user needs root");
        return;
    }
    // Another user may look into the folder, as into /dev/shm.
    std::fs::set_permissions(blocks_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(tmp.path().join("a.png"))
        .unwrap();
    let name = format!("lsother{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    crate::util::ok(&[
        os("load"),
        tmp.path().as_os_str(),
        os("--name"),
        os(&name),
        os("-q"),
    ]);
    let ls = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::util::bin())
        .arg("ls")
        .arg("--backing")
        .arg(blocks_dir())
        .output()
        .expect("setpriv is installed (util-linux)");
    let (out, err) = (text(&ls.stdout), text(&ls.stderr));
    assert_eq!(ls.status.code(), Some(0), "{out}{err}");
    assert!(!err.contains("Permission denied"), "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("shmpipe-{name} ")))
        .unwrap_or_else(|| panic!("lists shmpipe-{name}: {out}"));
    assert!(row.contains("foreign: not ours: owned by uid 0"), "{row}");
    assert!(!out.contains("no shmpipe blocks"), "{out}");
}

/// A folder with one of our names (open fails on it with EISDIR) made `ls` print "cannot
/// inspect" and exit 1, and `clean` with it. It is listed as foreign, as any file not ours is,
/// and left alone.
#[test]
fn a_folder_with_a_block_name_is_listed_as_foreign_and_left_alone() {
    let _backing = own_backing();
    let name = format!("shmpipe-folder-{}", std::process::id());
    std::fs::create_dir(shm(&name)).unwrap();
    let ls = shmpipe(&[os("ls")]);
    let listed = text(&ls.stdout);
    assert_eq!(ls.status.code(), Some(0), "{listed}{}", text(&ls.stderr));
    let row = listed.lines().find(|l| l.starts_with(&name));
    assert!(
        row.is_some_and(|r| r.contains("foreign: not ours: not a regular file")),
        "{listed}"
    );
    let clean = shmpipe(&[os("clean")]);
    assert_eq!(clean.status.code(), Some(1), "{}", text(&clean.stderr));
    assert!(
        text(&clean.stderr).contains(&name),
        "{}",
        text(&clean.stderr)
    );
    assert!(shm(&name).is_dir(), "the folder is still there");
}
