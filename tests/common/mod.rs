//! Helpers shared by the integration tests: run the real binary, then check that it left nothing
//! behind (no block in /dev/shm, no worker process).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shmpipe")
}

pub fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// Blocks in /dev/shm created by the coordinator with this pid (names embed the creator's pid).
pub fn blocks_of(pid: u32) -> Vec<String> {
    let prefix = format!("shmpipe-{pid}-");
    std::fs::read_dir("/dev/shm")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes started as workers of the coordinator with this pid.
pub fn workers_of(pid: u32) -> Vec<u32> {
    let needle = format!("--parent\0{pid}\0");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("worker\0") && cmdline.contains(&needle) {
                // A zombie still shows its cmdline as empty; this one is running.
                found.push(p);
            }
        }
    }
    found
}

/// Runs `shmpipe ARGS...` to completion and asserts it left no block and no worker behind.
pub fn run(args: &[&std::ffi::OsStr]) -> Output {
    let child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmpipe");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait shmpipe");
    assert_no_leaks(pid);
    out
}

pub fn assert_no_leaks(pid: u32) {
    assert_eq!(
        blocks_of(pid),
        Vec::<String>::new(),
        "block left in /dev/shm"
    );
    // Workers die with their coordinator; give the kernel a moment to deliver that.
    for _ in 0..100 {
        if workers_of(pid).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!(
        "workers still running after their coordinator {pid} ended: {:?}",
        workers_of(pid)
    );
}

pub fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every regular file under `root`, relative, sorted.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// Runs `shmpipe ARGS...`, asserts success, returns its stdout.
pub fn ok(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "shmpipe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the shell `script` in a private mount namespace (`unshare -m`, needs root), with
/// `$SHMPIPE` naming the binary, so it can mount a small tmpfs without touching the host's
/// mounts. None when SHMPIPE_SKIP_NAMESPACE_TESTS is set; without it a missing `unshare` fails
/// the test rather than passing silently.
pub fn in_mount_namespace(script: &str) -> Option<Output> {
    if std::env::var_os("SHMPIPE_SKIP_NAMESPACE_TESTS").is_some() {
        eprintln!("skipped: SHMPIPE_SKIP_NAMESPACE_TESTS is set");
        return None;
    }
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .env("SHMPIPE", bin())
        .output()
        .expect("unshare is installed (util-linux)");
    Some(out)
}

/// Removes a kept dataset when dropped, even when an assertion failed, so no test leaves a block
/// behind.
pub struct Dataset(pub String);

impl Drop for Dataset {
    fn drop(&mut self) {
        let _ = Command::new(bin()).args(["rm", &self.0]).output();
    }
}

#[allow(unused_imports)]
pub use shmpipe_worker::codec::exif_orientation;
