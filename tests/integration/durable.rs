//! Outputs survive a crash of the machine: each is flushed (`fdatasync`) before the rename that
//! puts it in place, and every folder holding outputs is flushed (`fsync`) after the workers
//! have joined, so the renames are on disk too; `--no-fsync` does neither. Checked on the real
//! binary and its real workers under strace, one trace per process, fds shown as paths.
//!
//! Needs strace (.ci/run installs it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{assets, bin, files_under};

/// One traced call: its process, time, name and the text inside its parentheses.
#[derive(Debug)]
struct Call {
    pid: u32,
    time: f64,
    name: String,
    args: String,
}

/// Runs `shmpipe run assets/ -o OUT EXTRA...` under strace; every process's file-syncing and
/// renaming calls, in time order.
fn traced_run(out: &Path, traces: &Path, extra: &[&str]) -> Vec<Call> {
    std::fs::create_dir_all(traces).unwrap();
    let prefix = traces.join("t");
    let mut child = Command::new("strace")
        .args(["-f", "-ff", "-qq", "-ttt", "-y", "-s", "4096"])
        // By pattern: `rename` itself does not exist on every architecture.
        .args(["-e", "trace=/^(f(data)?sync|rename(at2?)?)$"])
        .arg("-o")
        .arg(&prefix)
        .arg(bin())
        .args([
            "run".as_ref(),
            assets().as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ])
        .args(["--ops", "invert", "-j", "2", "--quiet"])
        .args(extra)
        .spawn()
        .expect("strace runs (apt-get install strace)");
    let status = child.wait().unwrap();
    assert!(status.success(), "shmpipe under strace: {status}");
    let mut calls = Vec::new();
    for entry in std::fs::read_dir(traces).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid: u32 = name.rsplit('.').next().unwrap().parse().unwrap();
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            // 1764312345.123456 fdatasync(4</out/.a.png.shmpipe-tmp-x>) = 0
            let Some((time, call)) = line.split_once(' ') else {
                continue;
            };
            let Some((name, rest)) = call.split_once('(') else {
                continue;
            };
            // strace pads short calls before " = ".
            let Some((args, result)) = rest
                .rsplit_once(" = ")
                .and_then(|(args, result)| Some((args.trim_end().strip_suffix(')')?, result)))
            else {
                continue;
            };
            assert_eq!(result.trim(), "0", "{line}");
            calls.push(Call {
                pid,
                time: time.parse().unwrap(),
                name: name.to_string(),
                args: args.to_string(),
            });
        }
    }
    calls.sort_by(|a, b| a.time.total_cmp(&b.time));
    calls
}

/// The path inside `fd</path>`.
fn fd_path(arg: &str) -> PathBuf {
    let start = arg.find('<').expect("strace -y shows the fd's path") + 1;
    PathBuf::from(&arg[start..arg.rfind('>').unwrap()])
}

/// The quoted paths of a rename call: (from, to).
fn rename_paths(args: &str) -> (PathBuf, PathBuf) {
    let quoted: Vec<&str> = args.split('"').skip(1).step_by(2).collect();
    assert_eq!(quoted.len(), 2, "{args}");
    (PathBuf::from(quoted[0]), PathBuf::from(quoted[1]))
}

#[test]
fn each_output_is_flushed_before_its_rename_and_its_folders_after_the_join() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let calls = traced_run(&out, &dir.path().join("traces"), &[]);
    let outputs = files_under(&out);
    assert!(outputs.len() >= 8, "assets give {} outputs", outputs.len());

    // Every output was renamed into place right after its temporary file was flushed, by the
    // same process, with nothing else of that process's in between.
    let renames: Vec<&Call> = calls
        .iter()
        .filter(|c| c.name.starts_with("rename"))
        .collect();
    let renamed: BTreeSet<PathBuf> = renames.iter().map(|c| rename_paths(&c.args).1).collect();
    let expected: BTreeSet<PathBuf> = outputs.iter().map(|f| out.join(f)).collect();
    assert_eq!(renamed, expected);
    for (at, rename) in calls.iter().enumerate() {
        if !rename.name.starts_with("rename") {
            continue;
        }
        let (from, _) = rename_paths(&rename.args);
        // The same process's call just before (a process's calls are in time order).
        let before = calls[..at]
            .iter()
            .rfind(|c| c.pid == rename.pid)
            .unwrap_or_else(|| panic!("nothing before {rename:?}"));
        assert_eq!(before.name, "fdatasync", "before {rename:?}");
        assert_eq!(fd_path(&before.args), from, "fdatasync of the renamed file");
    }
    let worker_pids: BTreeSet<u32> = renames.iter().map(|c| c.pid).collect();

    // Then the coordinator (not a worker) flushed every folder that gained an entry: each
    // sub-folder, the output root and the folders above it, after the last rename.
    let last_rename = renames.iter().map(|c| c.time).fold(0.0, f64::max);
    let folders: BTreeSet<PathBuf> = calls
        .iter()
        .filter(|c| c.name == "fsync")
        .map(|c| {
            assert!(
                !worker_pids.contains(&c.pid),
                "a worker flushed a folder: {c:?}"
            );
            assert!(
                c.time >= last_rename,
                "folder flushed before the last rename: {c:?}"
            );
            fd_path(&c.args)
        })
        .collect();
    let mut expected_folders: BTreeSet<PathBuf> = expected
        .iter()
        .map(|f| f.parent().unwrap().to_path_buf())
        .collect();
    expected_folders.extend(out.ancestors().map(Path::to_path_buf));
    assert_eq!(folders, expected_folders);
    assert!(
        expected_folders.len() >= 4,
        "assets have sub-folders: {expected_folders:?}"
    );
}

#[test]
fn no_fsync_flushes_nothing_and_writes_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (synced, unsynced) = (dir.path().join("synced"), dir.path().join("unsynced"));
    traced_run(&synced, &dir.path().join("t1"), &[]);
    let calls = traced_run(&unsynced, &dir.path().join("t2"), &["--no-fsync"]);
    let flushes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.name == "fdatasync" || c.name == "fsync")
        .collect();
    assert!(flushes.is_empty(), "--no-fsync flushed: {flushes:?}");
    let files = files_under(&synced);
    assert_eq!(files, files_under(&unsynced));
    for f in &files {
        assert!(
            std::fs::read(synced.join(f)).unwrap() == std::fs::read(unsynced.join(f)).unwrap(),
            "{} differs",
            f.display()
        );
    }
}

#[test]
fn save_flushes_its_outputs_too() {
    // `save` writes a kept dataset's images with the same encoder path.
    let name = format!("durable-{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    let load = Command::new(bin())
        .args([
            "load".as_ref(),
            assets().as_os_str(),
            "--name".as_ref(),
            name.as_ref(),
        ])
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", crate::util::stderr(&load));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("saved");
    let traces = dir.path().join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    let status = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=/^f(data)?sync$", "-o"])
        .arg(traces.join("t"))
        .arg(bin())
        .args([
            "save".as_ref(),
            name.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let trace = std::fs::read_to_string(traces.join("t")).unwrap();
    let saved = files_under(&out).len();
    assert!(saved >= 8, "saved {saved}");
    assert_eq!(trace.matches("fdatasync(").count(), saved, "{trace}");
    let root_flushed = trace
        .lines()
        .any(|l| l.contains(" fsync(") && l.contains(&format!("<{}>", out.display())));
    assert!(root_flushed, "the output folder was not flushed:\n{trace}");
}
