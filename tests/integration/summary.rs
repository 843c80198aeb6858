//! What the summary says: counts against what was planned, a stopped run's images not started,
//! a run with nothing to do, a run that writes nothing, skipped files, plural agreement, and no
//! ratio where it would measure a fixed cost.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{assets, os};
use rustix::process::{kill_process, Pid, Signal};

/// The images under `assets/` (its LICENSE.md is the one file that is not an image).
fn asset_images() -> u64 {
    crate::util::files_under(&assets())
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e != "md"))
        .count() as u64
}

fn text_of(args: &[&std::ffi::OsStr]) -> String {
    crate::util::ok(args)
}

fn json_of(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push(os("--json"));
    serde_json::from_str(&crate::util::ok(&args)).unwrap()
}

#[test]
fn a_plain_run_counts_against_the_plan_and_names_what_it_wrote() {
    let images = asset_images();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let text = text_of(&[
        os("run"),
        assets().as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("-j"),
        os("1"),
    ]);
    assert!(
        text.starts_with(&format!("{images} of {images} images done, 0 failed\n")),
        "{text}"
    );
    assert!(
        text.contains("with 1 worker\n"),
        "one worker, singular: {text}"
    );
    let started = crate::util::run(&[os("run"), assets().as_os_str(), os("-j"), os("1")]);
    let said = String::from_utf8_lossy(&started.stderr);
    assert!(
        said.contains(", 1 worker\n"),
        "the start line agrees too: {said}"
    );
    assert!(
        text.contains("1 file skipped: not images (--verbose names them)\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("written to {}\n", out.display())),
        "{text}"
    );
    assert!(!text.contains("nothing written"), "{text}");
    assert!(!text.contains("retried"), "nothing was retried: {text}");
    // A few MiB of pixels: the processes' own memory dominates, so no ratio to the dataset.
    assert!(!text.contains("x the decoded dataset"), "{text}");
    assert!(text.contains("peak memory, all processes: Pss "), "{text}");

    let s = json_of(&[os("run"), assets().as_os_str(), os("-j"), os("2")]);
    assert_eq!(s["images_planned"], images);
    assert_eq!(s["images_ok"], images);
    assert_eq!(s["images_not_started"], 0);
    assert_eq!(s["files_skipped"], 1);
    assert!(s["output_dir"].is_null());
}

#[test]
fn a_run_without_output_says_nothing_was_written() {
    let text = text_of(&[os("run"), assets().as_os_str(), os("--ops"), os("invert")]);
    assert!(text.contains("nothing written (no -o)\n"), "{text}");
    assert!(
        text.contains(" workers\n"),
        "more than one worker, plural: {text}"
    );
}

/// A file refused while planning has no slot in the block: the start line says so, so that it
/// and the summary count the same files (before, "2 images" at the start, "2 of 3" at the end).
#[test]
fn the_start_line_counts_files_refused_while_planning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    for name in ["rocket.jpg", "seeding.jpg"] {
        std::fs::copy(assets().join(name), dir.join(name)).unwrap();
    }
    std::fs::write(dir.join("zz.jpg"), b"not a jpeg").unwrap();
    let out = crate::util::run(&[os("run"), dir.as_os_str(), os("-j"), os("1")]);
    let said = crate::util::stderr(&out);
    let start = said
        .lines()
        .find(|l| l.starts_with("shmpipe: block "))
        .unwrap_or_else(|| panic!("no start line: {said}"));
    assert!(
        start.contains(": 2 images (1 more file refused, named at the end), "),
        "{start}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("2 of 3 images done, 1 failed\n"), "{text}");
    assert!(
        format!("{text}{said}").contains("zz.jpg: not an image"),
        "{text}{said}"
    );
}

#[test]
fn a_run_with_every_output_present_has_nothing_to_do() {
    let images = asset_images();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let assets = assets();
    let args = [
        os("run"),
        assets.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--skip-existing"),
    ];
    text_of(&args);
    let text = text_of(&args);
    assert_eq!(
        text.lines().next(),
        Some(format!("nothing to do: {images} outputs exist (--skip-existing)").as_str()),
        "{text}"
    );
    assert!(!text.contains("MP/s"), "no throughput of nothing: {text}");
    assert!(!text.contains("0 workers"), "{text}");
    let s = json_of(&args);
    assert_eq!(s["images_planned"], 0);
    assert_eq!(s["images_not_started"], 0);
    assert_eq!(s["files_existing"], images);

    // One output gone: one image planned, the rest left alone.
    let first = crate::util::files_under(&out)[0].clone();
    std::fs::remove_file(out.join(first)).unwrap();
    let text = text_of(&args);
    assert!(text.starts_with("1 of 1 image done, 0 failed\n"), "{text}");
    assert!(
        text.contains(&format!(
            "{} images left alone: their output exists (--skip-existing)",
            images - 1
        )),
        "{text}"
    );
}

/// Starts a run of 8 generated images with one worker that stalls on one of them, stops it with
/// SIGINT once its block exists, and returns its stdout.
fn stopped_run(dir: &Path, extra: &[&str]) -> String {
    let child = Command::new(crate::util::bin())
        .args([os("run"), dir.as_os_str(), os("-j"), os("1")])
        .args(extra)
        .env(shmpipe_worker::hooks::STALL_ENV, "img000003.png")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::util::blocks_of(pid).is_empty() {
        assert!(Instant::now() < deadline, "the run never created its block");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::INT).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    crate::util::assert_no_leaks(pid);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_stopped_run_counts_what_it_did_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    crate::util::ok(&[
        os("gen"),
        dir.as_os_str(),
        os("--count"),
        os("8"),
        os("--size"),
        os("64x48"),
        os("--format"),
        os("png"),
    ]);
    let text = stopped_run(&dir, &[]);
    let first = text.lines().next().unwrap_or_default();
    // "K of 8 images done, 0 failed, M not started: stopped by SIGINT", K + M = 8, M >= 1 (the
    // stalled image is never done).
    let (done, rest) = first
        .split_once(" of 8 images done, 0 failed, ")
        .expect(first);
    let (not_started, reason) = rest.split_once(" not started: ").expect(first);
    let (done, not_started): (u64, u64) = (done.parse().unwrap(), not_started.parse().unwrap());
    assert_eq!(done + not_started, 8, "{first}");
    assert!(not_started >= 1, "{first}");
    assert_eq!(reason, "stopped by SIGINT", "{first}");

    let s: serde_json::Value = serde_json::from_str(&stopped_run(&dir, &["--json"])).unwrap();
    assert_eq!(s["images_planned"], 8);
    let (ok, failed, not_started) = (
        s["images_ok"].as_u64().unwrap(),
        s["images_failed"].as_u64().unwrap(),
        s["images_not_started"].as_u64().unwrap(),
    );
    assert_eq!(ok + failed + not_started, 8, "{s}");
    assert!(not_started >= 1, "{s}");
    assert_eq!(s["stopped_by_signal"], "SIGINT");
}

/// What a terminal shows, as lines: control sequences removed, split at every line feed,
/// carriage return and cursor move (the bars move between their lines with CSI sequences).
fn screen_lines(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then one final byte in '@'..='~'.
            if chars.peek() == Some(&'[') {
                chars.next();
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        if "ABCDEFGHd".contains(f) {
                            plain.push('\n');
                        }
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain.split(['\n', '\r']).map(str::to_string).collect()
}

#[test]
fn on_a_60_column_terminal_no_line_is_wider() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for name in ["rocket.jpg", "coffee.png", "astronaut.png"] {
        std::fs::copy(assets().join(name), input.join(name)).unwrap();
    }
    // A failure whose path alone is wider than the terminal.
    let long = "a-file-with-a-long-name-that-only-looks-like-an-image-to-its-owner.jpg";
    std::fs::write(input.join(long), b"not a picture").unwrap();
    let out = tmp.path().join("out");
    // `script` gives the run a terminal (a pty), made 60 columns wide, for its summary on
    // stdout. Its stderr (the bars, which indicatif draws as full-width lines that the terminal
    // wraps) goes to a file.
    let command = format!(
        "stty cols 60 rows 40; exec '{}' run '{}' -o '{}' -j 2 --ops blur:2 2>'{}'",
        crate::util::bin(),
        input.display(),
        out.display(),
        tmp.path().join("stderr").display()
    );
    let shown = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    assert_eq!(
        shown.status.code(),
        Some(1),
        "one image failed: {}{}",
        String::from_utf8_lossy(&shown.stdout),
        std::fs::read_to_string(tmp.path().join("stderr")).unwrap_or_default()
    );
    let lines = screen_lines(&shown.stdout);
    let text = lines.join("\n");
    for needed in ["1 failed", "failed:", "written to", "peak memory"] {
        assert!(text.contains(needed), "{needed:?} in {text}");
    }
    for line in &lines {
        assert!(
            line.chars().count() <= 60,
            "{} columns: {line:?}",
            line.chars().count()
        );
    }
}

/// The live bars, drawn on a 60-column terminal: the overall bar and each worker's line fit it,
/// a file name wider than the terminal is cut rather than wrapped, and the bar shows MP/s.
#[test]
fn on_a_60_column_terminal_the_bars_fit_too() {
    const COLUMNS: usize = 60;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let long = "a-photo-with-a-name-far-wider-than-the-sixty-columns-of-this-terminal.png";
    std::fs::copy(assets().join("coffee.png"), input.join(long)).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("rocket.jpg")).unwrap();
    // Both streams go to the pty; one worker holds the long-named image 2 s, so the bars are
    // drawn (15 times a second) while its name is the worker's current file.
    let command = format!(
        "stty cols {COLUMNS} rows 40; exec '{}' run '{}' -j 1 --ops invert",
        crate::util::bin(),
        input.display(),
    );
    let shown = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SHMPIPE_TEST_STALL", format!("{long}:2000"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    // A line that fills the width exactly is followed by the next with no line feed (the
    // terminal wraps): cut what is shown into the terminal's rows, as it does. A line that did
    // not fit would go on in the next row.
    let rows: Vec<String> = screen_lines(&shown.stdout)
        .iter()
        .flat_map(|line| {
            let chars: Vec<char> = line.chars().collect();
            chars
                .chunks(COLUMNS)
                .map(|row| row.iter().collect::<String>())
                .collect::<Vec<_>>()
        })
        .collect();
    let text = rows.join("\n");
    assert_eq!(shown.status.code(), Some(0), "{text}");
    assert!(
        rows.iter()
            .any(|r| r.contains("MP/s") && r.contains(" 1/2 ")),
        "the overall bar, one row: {text}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("    worker 0     1 image   a-photo-with")),
        "worker 0's row names its file, one image (singular): {text}"
    );
    // The name is cut at the row's end: none of its tail reaches another row.
    assert!(!text.contains("terminal.png"), "{text}");
    assert!(!text.contains("columns-of"), "{text}");
}
