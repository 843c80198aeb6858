//! Inputs beyond one folder: files and folders as arguments, a list from a file or stdin
//! (NUL-separated for names holding a newline), `--include` / `--exclude` globs. Outputs keep
//! their path relative to the inputs' common folder, and are decoded back and compared.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::util::{command, files_under, finish, os, run, stderr};

/// Writes a small PNG whose pixels depend on `seed`.
fn png(path: &Path, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(9, 7, |x, y| {
        image::Rgb([seed, (x * 20) as u8, (y * 30) as u8 ^ seed])
    })
    .save_with_format(path, image::ImageFormat::Png)
    .unwrap();
}

/// in/a/x.png, in/a/sub/y.png, in/b/z.png, in/b/w.png
fn tree(root: &Path) -> PathBuf {
    let input = root.join("in");
    png(&input.join("a/x.png"), 1);
    png(&input.join("a/sub/y.png"), 2);
    png(&input.join("b/z.png"), 3);
    png(&input.join("b/w.png"), 4);
    input
}

/// Every output under `out` (relative) has the pixels of the input at the same relative path
/// under `root`; gives the outputs.
fn outputs_match(out: &Path, root: &Path) -> Vec<PathBuf> {
    let files = files_under(out);
    for f in &files {
        let written = image::open(out.join(f)).unwrap().to_rgb8();
        let source = image::open(root.join(f)).unwrap().to_rgb8();
        assert_eq!(written, source, "{}", f.display());
    }
    files
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

#[test]
fn files_and_folders_as_arguments_keep_paths_relative_to_their_common_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tree(tmp.path());
    let out = tmp.path().join("out");
    let done = run(&[
        os("run"),
        input.join("a/x.png").as_os_str(),
        input.join("b").as_os_str(),
        // Given twice: once as itself, once inside b/.
        input.join("b/z.png").as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("-j"),
        os("2"),
    ]);
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(
        outputs_match(&out, &input),
        paths(&["a/x.png", "b/w.png", "b/z.png"])
    );
    // One file: its own folder is the common folder.
    let single = tmp.path().join("single");
    let done = run(&[
        os("run"),
        input.join("a/sub/y.png").as_os_str(),
        os("-o"),
        single.as_os_str(),
    ]);
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(
        outputs_match(&single, &input.join("a/sub")),
        paths(&["y.png"])
    );
    // A path that does not exist is named, and nothing is done.
    let missing = input.join("a/nope.png");
    let refused = run(&[
        os("run"),
        input.join("a/x.png").as_os_str(),
        missing.as_os_str(),
        os("-o"),
        tmp.path().join("never").as_os_str(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("nope.png"),
        "{}",
        stderr(&refused)
    );
    assert!(!tmp.path().join("never").exists());
}

#[test]
fn a_nul_separated_list_on_stdin_takes_a_name_holding_a_newline() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    png(&input.join("we\nird.png"), 5);
    png(&input.join("plain.png"), 6);
    png(&input.join("not-listed.png"), 7);
    let out = tmp.path().join("out");
    let mut cmd = command(&[
        os("run"),
        os("--files-from"),
        os("-"),
        os("-0"),
        os("-o"),
        out.as_os_str(),
    ]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut list = Vec::new();
    for name in ["we\nird.png", "plain.png"] {
        list.extend_from_slice(input.join(name).as_os_str().as_encoded_bytes());
        list.push(0);
    }
    child.stdin.take().unwrap().write_all(&list).unwrap();
    let done = finish(child, "run --files-from -");
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(
        outputs_match(&out, &input),
        paths(&["plain.png", "we\nird.png"])
    );
    // The same list one path a line, from a file, with relative paths: the newline name cannot
    // be given that way, so it is left out of this one.
    let listed = tmp.path().join("list.txt");
    std::fs::write(&listed, "in/plain.png\n\nin/not-listed.png\n").unwrap();
    let out2 = tmp.path().join("out2");
    let mut cmd = command(&[
        os("run"),
        os("--files-from"),
        listed.as_os_str(),
        os("-o"),
        out2.as_os_str(),
    ]);
    cmd.current_dir(tmp.path());
    let done = finish(cmd.spawn().unwrap(), "run --files-from list.txt");
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(
        outputs_match(&out2, &input),
        paths(&["not-listed.png", "plain.png"])
    );
}

#[test]
fn include_and_exclude_choose_files_and_a_pattern_that_matches_nothing_is_said() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tree(tmp.path());
    std::fs::write(input.join("a/notes.txt"), "not an image").unwrap();
    let out = tmp.path().join("out");
    let done = run(&[
        os("run"),
        input.as_os_str(),
        os("--include"),
        os("*.png"),
        os("--exclude"),
        os("b/**"),
        os("--exclude"),
        os("y.png"),
        os("-o"),
        out.as_os_str(),
        os("--json"),
    ]);
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(outputs_match(&out, &input), paths(&["a/x.png"]));
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    // notes.txt is not included, so not even looked at (not "skipped").
    assert_eq!(summary["files_skipped"], 0, "{summary}");
    let none = run(&[
        os("run"),
        input.as_os_str(),
        os("--include"),
        os("*.xyz"),
        os("-o"),
        tmp.path().join("none").as_os_str(),
    ]);
    assert_eq!(none.status.code(), Some(0), "{}", stderr(&none));
    assert!(
        stderr(&none).contains("--include \"*.xyz\" matched no file"),
        "{}",
        stderr(&none)
    );
    assert!(
        String::from_utf8_lossy(&none.stdout).contains("no images found"),
        "{}",
        String::from_utf8_lossy(&none.stdout)
    );
    assert!(files_under(&tmp.path().join("none")).is_empty());
}

/// `load` takes the same inputs: its images' paths are relative to their common folder, as
/// `save` writes them back.
#[test]
fn load_takes_files_folders_and_globs_too() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tree(tmp.path());
    let name = format!("inputs{}", std::process::id());
    let _cleanup = crate::util::Dataset(name.clone());
    let done = crate::util::shmpipe(&[
        os("load"),
        input.join("a").as_os_str(),
        input.join("b/w.png").as_os_str(),
        // Anchored at the common folder (in/): `**/` reaches a/sub/ below it.
        os("--exclude"),
        os("**/sub/**"),
        os("--name"),
        os(&name),
        os("-q"),
    ]);
    assert!(done.status.success(), "{}", stderr(&done));
    let out = tmp.path().join("saved");
    let saved = crate::util::shmpipe(&[os("save"), os(&name), os("-o"), out.as_os_str()]);
    assert!(saved.status.success(), "{}", stderr(&saved));
    assert_eq!(outputs_match(&out, &input), paths(&["a/x.png", "b/w.png"]));
}
