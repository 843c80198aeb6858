//! Helpers shared by the integration tests: run the real binary (never longer than [`HANG`]),
//! check that it left nothing behind (no block, no worker process), and give a test its own
//! `--backing` folder so that no other test's sweep or `clean` can touch its blocks.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any one command may take before a test calls it hung: far above what any command
/// here needs. A guard against hangs; no test passes or fails on timing otherwise.
pub const HANG: Duration = Duration::from_secs(60);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shmpipe")
}

pub fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// Where this thread's test keeps its blocks: its own `--backing` folder, or /dev/shm.
pub fn blocks_dir() -> PathBuf {
    BACKING
        .with(|b| b.borrow().clone())
        .unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// Blocks created by the coordinator with this pid (names embed the creator's pid), where this
/// thread's test keeps its blocks.
pub fn blocks_of(pid: u32) -> Vec<String> {
    let prefix = format!("shmpipe-{pid}-");
    std::fs::read_dir(blocks_dir())
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

thread_local! {
    /// The `--backing` folder of the test running on this thread, if it asked for one.
    static BACKING: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// The subcommands that take `--backing`.
const TAKE_BACKING: [&str; 10] = [
    "run", "load", "save", "export", "apply", "repair", "watch", "ls", "clean", "rm",
];

/// A folder of this test's own for blocks, in /dev/shm (so its blocks are shared memory as
/// anywhere else; its name is not one of ours, which `ls` would list as foreign), removed with everything in it when dropped. While it lives, every command
/// the helpers below start from this thread gets `--backing` it: a sweep or `clean` by a test on
/// another thread never sees this test's blocks, nor this one theirs.
pub struct OwnBacking {
    _dir: tempfile::TempDir,
}

pub fn own_backing() -> OwnBacking {
    let dir = tempfile::Builder::new()
        .prefix("shmpipe_test.")
        .tempdir_in("/dev/shm")
        .expect("a folder in /dev/shm");
    BACKING.with(|b| *b.borrow_mut() = Some(dir.path().to_path_buf()));
    OwnBacking { _dir: dir }
}

impl OwnBacking {
    /// The folder itself.
    pub fn path(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for OwnBacking {
    fn drop(&mut self) {
        BACKING.with(|b| *b.borrow_mut() = None);
    }
}

/// `shmpipe ARGS...`, not yet started: stdin empty, stdout and stderr piped, and `--backing`
/// after the subcommand when this thread's test has its own folder.
pub fn command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(bin());
    let mut args = args.iter().map(|a| a.as_ref());
    if let Some(sub) = args.next() {
        cmd.arg(sub);
        if TAKE_BACKING.iter().any(|t| OsStr::new(t) == sub) {
            if let Some(dir) = BACKING.with(|b| b.borrow().clone()) {
                cmd.arg("--backing").arg(dir);
            }
        }
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child`; past [`HANG`] kills it and fails the test, naming `what`.
pub fn finish(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + HANG;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("{what} hung: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("wait")
}

/// Runs `cmd` to completion and asserts it left no block and no worker behind.
pub fn finish_clean(mut cmd: Command) -> Output {
    let child = cmd.spawn().expect("spawn shmpipe");
    let pid = child.id();
    let out = finish(child, &format!("{cmd:?}"));
    assert_no_leaks(pid);
    out
}

/// Runs `shmpipe ARGS...` to completion; a kept dataset it made may stay.
pub fn shmpipe<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let mut cmd = command(args);
    let child = cmd.spawn().expect("spawn shmpipe");
    finish(child, &format!("{cmd:?}"))
}

/// Runs `shmpipe ARGS...` to completion and asserts it left no block and no worker behind.
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    finish_clean(command(args))
}

/// Runs `shmpipe ARGS...` with `env` added to its environment, to completion, and asserts it
/// left no block and no worker behind.
pub fn run_env<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(args);
    cmd.envs(env.iter().copied());
    finish_clean(cmd)
}

/// An outcome as the tests compare it: the exit code and what was said on stderr.
pub fn outcome(out: Output) -> (Option<i32>, String) {
    (out.status.code(), stderr(&out))
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
pub fn ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = shmpipe(args);
    assert!(
        out.status.success(),
        "shmpipe {:?}: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
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
        let _ = command(&["rm", &self.0]).output();
    }
}

pub use shmpipe_worker::codec::exif_orientation;

/// Waits until `ok` holds; past [`HANG`] fails the test, naming `what`.
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` to `pid`; one that has already gone is no error.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    match rustix::process::kill_process(pid, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => panic!("kill {pid:?}: {e}"),
    }
}
