//! Stopping a run with SIGINT, SIGTERM and SIGHUP: exit 130 / 143 / 129, complete outputs kept,
//! no temporary file, no block, no worker left.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{assert_no_leaks, assets, files_under, os};
use rustix::process::{kill_process, Pid, Signal};

/// Starts `shmpipe ARGS` with its worker held at camera.png (a minute), and returns once `out`
/// holds `outputs` complete files.
fn stalled_run(args: &[&std::ffi::OsStr], out: &Path, outputs: usize) -> std::process::Child {
    let child = Command::new(crate::util::bin())
        .args(args)
        .env(shmpipe_worker::hooks::STALL_ENV, "camera.png")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_under_or_empty(out).len() < outputs {
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn stop_mid_run(signal: Signal, expected_code: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // One worker stalls on camera.png (in nested/, sorted after the top-level files); the other
    // finishes what it can, so the stop finds complete outputs and an image in hand.
    let folder = assets();
    let args = [
        os("run"),
        folder.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--ops"),
        os("blur:1"),
        os("-j"),
        os("2"),
        os("--json"),
    ];
    let child = stalled_run(&args, &out, 3);
    let pid = child.id();
    assert!(
        !crate::util::blocks_of(pid).is_empty(),
        "the block exists while the run is live"
    );
    kill_process(Pid::from_raw(pid as i32).unwrap(), signal).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(expected_code),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_no_leaks(pid);
    let s: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("summary still printed");
    assert!(s["stopped_by_signal"].is_string());
    let files = files_under(&out);
    assert!(
        !files
            .iter()
            .any(|f| f.to_string_lossy().contains("shmpipe-tmp")),
        "no temporary file: {files:?}"
    );
    assert!(
        !files.iter().any(|f| f.ends_with("camera.png")),
        "the stalled image was not written"
    );
    assert_eq!(
        files.len() as u64,
        s["images_ok"].as_u64().unwrap(),
        "every finished image, and only those, has an output"
    );
    for f in files {
        image::open(out.join(&f)).unwrap_or_else(|e| panic!("{} is complete: {e}", f.display()));
    }
}

/// After Ctrl-C the text summary says how to finish the job, and that command does only what
/// is missing: with the first run's outputs, every image has its output once.
#[test]
fn an_interrupted_run_says_to_rerun_with_skip_existing_and_that_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let folder = assets();
    let args = [
        os("run"),
        folder.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--ops"),
        os("invert"),
        os("-j"),
        os("1"),
    ];
    let child = stalled_run(&args, &out, 2);
    let pid = child.id();
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::INT).unwrap();
    let output = crate::util::finish(child, "the interrupted run");
    assert_eq!(output.status.code(), Some(130));
    assert_no_leaks(pid);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("not started"), "{text}");
    assert!(
        text.contains("run the same command with --skip-existing"),
        "{text}"
    );
    let first = files_under(&out).len();
    let rest = crate::util::run(&[&args[..], &[os("--skip-existing"), os("--json")]].concat());
    assert!(rest.status.success(), "{}", crate::util::stderr(&rest));
    let s: serde_json::Value = serde_json::from_slice(&rest.stdout).unwrap();
    assert_eq!(s["files_existing"].as_u64().unwrap() as usize, first, "{s}");
    let all = crate::util::run(&[os("run"), assets().as_os_str(), os("--json")]);
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(
        files_under(&out).len() as u64,
        all["images_ok"].as_u64().unwrap(),
        "every image has its output once"
    );
}

fn files_under_or_empty(dir: &Path) -> Vec<std::path::PathBuf> {
    if dir.exists() {
        files_under(dir)
            .into_iter()
            .filter(|f| !f.to_string_lossy().contains("shmpipe-tmp"))
            .collect()
    } else {
        Vec::new()
    }
}

#[test]
fn sigint_stops_with_130_keeping_complete_outputs() {
    stop_mid_run(Signal::INT, 130);
}

#[test]
fn sigterm_stops_with_143() {
    stop_mid_run(Signal::TERM, 143);
}

#[test]
fn sighup_stops_with_129() {
    stop_mid_run(Signal::HUP, 129);
}

/// Once a job is over, Ctrl-C ends the process as it would any program: the job's handlers are
/// gone and the default action is back (not ignored, as an unregistered handler leaves it).
#[test]
fn sigint_after_the_job_ends_the_process() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut child = Command::new(crate::util::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("--ops"),
            os("invert"),
            os("-q"),
        ])
        .env("SHMPIPE_TEST_PAUSE_AFTER_JOB", "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The job is over, and its handlers gone, once the coordinator says it pauses. (Outputs
    // written and the block unlinked come a little before the handlers go: a SIGINT there is
    // the job's, and a busy machine lands one there.)
    let mut said = String::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("pausing") => break,
            Some(Ok(line)) => said.push_str(&line),
            _ => panic!("the run ended without pausing after its job: {said}"),
        }
    }
    assert!(files_under_or_empty(&out).len() >= 10, "{said}");
    assert!(crate::util::blocks_of(pid).is_empty());
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(Signal::INT.as_raw()),
        "SIGINT after the job was not acted on: {status:?}"
    );
    assert_no_leaks(pid);
}

/// Issue 27: a load stopped by Ctrl-C said "nothing written (no -o)", as if no dataset had been
/// asked for. It says the dataset was not kept, and no block of that name is left.
#[test]
fn a_load_stopped_by_sigint_says_its_dataset_was_not_kept() {
    let name = format!("stopped{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    let mut load = crate::util::command(&[
        os("load"),
        assets().as_os_str(),
        os("--name"),
        os(&name),
        os("-j"),
        os("1"),
    ]);
    load.env(shmpipe_worker::hooks::STALL_ENV, "camera.png");
    let child = load.spawn().unwrap();
    let pid = child.id();
    crate::util::wait_for("the load's worker to stall", || {
        crate::util::workers_of(pid).iter().any(|w| {
            std::fs::read_to_string(format!("/proc/{w}/wchan"))
                .is_ok_and(|c| c.contains("nanosleep"))
        })
    });
    crate::util::signal(pid, Signal::INT);
    let out = crate::util::finish(child, "stopped load");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        crate::util::stderr(&out)
    );
    assert_no_leaks(pid);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "dataset {name} not kept: stopped before every image was decoded"
        )),
        "{said}"
    );
    assert!(!said.contains("nothing written"), "{said}");
    assert!(!Path::new("/dev/shm")
        .join(format!("shmpipe-{name}"))
        .exists());
}
