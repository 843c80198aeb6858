//! The command line as people meet it: one error style, refused values listed with the valid
//! ones, shell completions and man pages. (Every argument's help line is checked by walking
//! clap's command tree in `src/cli.rs`'s unit tests.)

mod common;

use std::process::Command;

fn shmpipe(args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

/// Exit 2 and a stderr in shmpipe's one error style: `shmpipe: error: ...`, no colour codes.
fn refused(args: &[&str]) -> String {
    let out = shmpipe(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "shmpipe {args:?}: {err}");
    assert!(
        err.starts_with("shmpipe: error: "),
        "shmpipe {args:?} speaks in the one error style: {err}"
    );
    assert!(!err.contains('\x1b'), "no colour codes: {err:?}");
    err
}

#[test]
fn a_refused_format_lists_the_valid_ones() {
    for command in [
        &["save", "faces", "-o", "/nonexistent", "--format", "avif"][..],
        &["run", "assets", "--format", "avif"],
    ] {
        let err = refused(command);
        for format in ["png", "jpeg", "webp", "gif", "bmp", "tiff"] {
            assert!(err.contains(format), "{command:?} lists {format}: {err}");
        }
    }
    // The aliases still work: `jpg` is JPEG. (No such dataset: refused later, not for --format.)
    let err = refused(&[
        "save",
        "no-such-dataset-cli",
        "-o",
        "/nonexistent",
        "--format",
        "JPG",
    ]);
    assert!(err.contains("cannot attach"), "{err}");
}

#[test]
fn a_refused_op_lists_every_op_including_the_dataset_wide_ones() {
    for command in [
        &["apply", "no-such-dataset-cli", "--ops", "blurr"][..],
        &["run", "assets", "--ops", "blurr"],
    ] {
        let err = refused(command);
        for op in [
            "invert",
            "blur:SIGMA",
            "flip-v",
            "normalize",
            "normalize:float",
            "equalize:dataset",
        ] {
            assert!(err.contains(op), "{command:?} lists {op}: {err}");
        }
    }
}

#[test]
fn clap_refusals_and_shmpipe_refusals_share_one_style() {
    // Refused by clap (unknown flag, value out of range, missing argument) ...
    refused(&["run", "assets", "--no-such-flag"]);
    refused(&["run", "assets", "-j", "0"]);
    refused(&["rm"]);
    // ... and by shmpipe itself.
    refused(&["run", "/nonexistent/folder"]);
    // Help still goes to stdout with exit 0.
    let out = shmpipe(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--skip-existing"));
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "_shmpipe()"),
        ("zsh", "#compdef shmpipe"),
        ("fish", "complete -c shmpipe"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = shmpipe(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell} script: {script:.200}");
        // Subcommands and their flags are in it.
        assert!(
            script.contains("skip-existing"),
            "{shell} completes run's flags"
        );
        assert!(
            script.contains("export"),
            "{shell} completes the subcommands"
        );
    }
    // The bash script is valid bash.
    let out = shmpipe(&["completions", "bash"]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("shmpipe.bash");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(check.status.success(), "{check:?}");
    let err = refused(&["completions", "tcsh"]);
    assert!(err.contains("bash") && err.contains("zsh"), "{err}");
}

#[test]
fn man_pages_on_stdout_and_into_a_folder() {
    let out = shmpipe(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH shmpipe"),
        "{page:.300}"
    );
    assert!(
        page.contains("completions"),
        "the page lists the subcommands"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let out = shmpipe(&["man", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for page in [
        "shmpipe.1",
        "shmpipe-run.1",
        "shmpipe-load.1",
        "shmpipe-bench-memory.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page))
            .unwrap_or_else(|e| panic!("{page} written: {e}"));
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    let run_page = std::fs::read_to_string(dir.join("shmpipe-run.1")).unwrap();
    assert!(
        run_page.contains("skip\\-existing"),
        "run's page documents its flags"
    );
}
