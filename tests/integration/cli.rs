//! The command line as people meet it: one error style, refused values listed with the valid
//! ones, shell completions and man pages. (Every argument's help line is checked by walking
//! clap's command tree in `src/cli.rs`'s unit tests.)

use std::process::Command;

use crate::util::shmpipe;

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
        // Nothing hidden is offered: not the internal `worker`, not `run --exact-memory`.
        assert!(
            !script.contains("exact-memory") && !script.contains("Internal: one worker"),
            "{shell} offers hidden commands or flags"
        );
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

/// The subcommands `shmpipe PATH --help` lists under "Commands:", but `help`.
fn subcommands_of(path: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let help = String::from_utf8(shmpipe(&args).stdout).unwrap();
    let Some(start) = help.find("\nCommands:\n") else {
        return Vec::new();
    };
    help[start + "\nCommands:\n".len()..]
        .lines()
        .take_while(|line| !line.is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

/// docs/cli.md's generated part: every command's `--help`, at 100 columns, walked from the
/// top-level help's command list (so a new subcommand is in it without a change here).
fn cli_reference() -> String {
    fn walk(path: &mut Vec<String>, out: &mut String) {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut with_help = args.clone();
        with_help.push("--help");
        let help = Command::new(crate::util::bin())
            .args(&with_help)
            .env("COLUMNS", "100")
            .output()
            .unwrap();
        assert!(help.status.success(), "shmpipe {with_help:?}");
        let title = std::iter::once("shmpipe")
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let text = String::from_utf8(help.stdout).unwrap();
        out.push_str(&format!(
            "\n### `{title}`\n\n```text\n{}\n```\n",
            text.trim_end()
        ));
        for sub in subcommands_of(&args) {
            path.push(sub);
            walk(path, out);
            path.pop();
        }
    }
    let mut out = String::new();
    walk(&mut Vec::new(), &mut out);
    out
}

/// docs/cli.md ends with what the binary prints for every command: a flag added, renamed or
/// reworded in src/cli.rs without the doc fails here. `SHMPIPE_BLESS=1` rewrites that part.
#[test]
fn cli_reference_in_docs_matches_the_binary() {
    const MARKER: &str = "this\nline. tests/integration/cli.rs checks it; `SHMPIPE_BLESS=1 cargo test --test integration cli_reference` rewrites it. -->\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let cut = doc
        .find(MARKER)
        .expect("docs/cli.md has its generated part's marker")
        + MARKER.len();
    let want = cli_reference();
    if std::env::var_os("SHMPIPE_BLESS").is_some() {
        std::fs::write(&path, format!("{}{want}", &doc[..cut])).unwrap();
        return;
    }
    assert!(
        doc[cut..] == want,
        "docs/cli.md's generated part differs from what the binary prints; rewrite it with \
         `SHMPIPE_BLESS=1 cargo test --test integration cli_reference` and review the diff"
    );
    assert!(
        !want.contains("shmpipe worker"),
        "the hidden worker is not documented"
    );
}

/// What README's shell commands are, for the two tests below.
enum Runs {
    /// The test runs the line itself (with `/tmp/` and dataset names made its own).
    Here,
    /// The test runs this instead, for the reason given.
    As(&'static str, &'static str),
    /// Run elsewhere, as said.
    Elsewhere(&'static str),
}

/// README's fenced `sh` command lines that carry no `# needs:` mark, in README's order, as
/// README writes them (a trailing comment cut), with how each is run.
const README_COMMANDS: &[(&str, Runs)] = &[
    (
        "cargo run --release -- run assets/ -o /tmp/out --ops grayscale,blur:2 -j 4",
        Runs::As(
            "shmpipe run assets/ -o /tmp/out --ops grayscale,blur:2 -j 4",
            "the test's own build: a release build inside a test waits minutes for cargo's lock",
        ),
    ),
    (
        "./test.sh",
        Runs::Elsewhere(".ci/run runs it, and it runs this test"),
    ),
    (
        "mkdir -p ~/.local/share/bash-completion/completions",
        Runs::Here,
    ),
    (
        "shmpipe completions bash > ~/.local/share/bash-completion/completions/shmpipe",
        Runs::Here,
    ),
    ("shmpipe man ~/.local/share/man/man1", Runs::Here),
    (
        "export MANPATH=\"$HOME/.local/share/man:$MANPATH\"",
        Runs::Here,
    ),
    (
        "shmpipe run assets/ -o /tmp/gray --ops grayscale,blur:2 -j 2",
        Runs::Here,
    ),
    (
        "shmpipe run assets/rocket.jpg assets/nested -o /tmp/picked --exclude 'chelsea*'",
        Runs::Here,
    ),
    (
        "find assets -name '*.png' -print0 | shmpipe run --files-from - -0 -o /tmp/pngs",
        Runs::Here,
    ),
    (
        "shmpipe run assets/ -o /tmp/thumbs --resize 256x256 --format jpeg",
        Runs::Here,
    ),
    (
        "shmpipe load assets/ --name photos --resize 224x224 --fit cover",
        Runs::Here,
    ),
    ("python3 examples/numpy_view.py photos", Runs::Here),
    ("shmpipe export photos /tmp/photos.npy", Runs::Here),
    ("shmpipe rm photos", Runs::Here),
    (
        "shmpipe gen /tmp/train/cats --count 32 --size 320x240 --seed 1",
        Runs::Here,
    ),
    (
        "shmpipe gen /tmp/train/dogs --count 32 --size 320x240 --seed 2",
        Runs::Here,
    ),
    (
        "shmpipe load /tmp/train --name train --resize 224x224 --fit cover --labels folder",
        Runs::Here,
    ),
    // The pool path: torch is not installed here. The torch DataLoader path, with
    // shmpipe.collate under forkserver and persistent workers, is what benches/loader.py runs.
    (
        "python3 examples/train.py train --workers 2 --epochs 3",
        Runs::Here,
    ),
    ("shmpipe rm train", Runs::Here),
    (
        "mkdir -p /tmp/mixed && cp assets/rocket.jpg /tmp/mixed/",
        Runs::Here,
    ),
    (
        "head -c 20000 assets/seeding.jpg > /tmp/mixed/cut.jpg",
        Runs::Here,
    ),
    ("echo \"not an image\" > /tmp/mixed/notes.png", Runs::Here),
    (
        "shmpipe run /tmp/mixed -o /tmp/mixed-out || echo \"exit code $?\"",
        Runs::Here,
    ),
    ("ls -A /tmp/mixed-out", Runs::Here),
];

/// A README command line that needs what the tests lack says so on its line.
const NEEDS: &str = "# needs:";
/// The dataset names README's commands use, made the test's own (`photos-PID`).
const README_DATASETS: &[&str] = &["photos", "train"];

fn readme() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .unwrap()
}

/// The bodies of README's fenced blocks of `lang`.
fn fenced(text: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line == open => current = Some(String::new()),
            Some(body) if line.starts_with("```") => {
                blocks.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// `line` without a trailing shell comment (a `#` after a blank, outside quotes).
fn without_comment(line: &str) -> &str {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return line[..i].trim_end(),
            _ => {}
        }
        prev = c;
    }
    line.trim_end()
}

/// README's command lines: every line of its `sh` blocks but blank lines and comments.
fn readme_command_lines() -> Vec<String> {
    fenced(&readme(), "sh")
        .iter()
        .flat_map(|block| block.lines().map(String::from).collect::<Vec<_>>())
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .collect()
}

/// The rule that keeps README honest: each shell command it shows is run by the test below (or
/// stands for one that is, or for CI itself), or says on its line what it needs that the tests
/// lack. A command added without either, or one changed without the list, fails here; so does a
/// Python excerpt not found word for word in a file under examples/.
#[test]
fn every_readme_command_is_run_or_marked() {
    let unmarked: Vec<String> = readme_command_lines()
        .into_iter()
        .filter(|line| !line.contains(NEEDS))
        .map(|line| without_comment(&line).to_string())
        .collect();
    let listed: Vec<&str> = README_COMMANDS.iter().map(|(line, _)| *line).collect();
    assert_eq!(
        unmarked, listed,
        "README's shell commands (left) must each be in README_COMMANDS, in order (right), or \
         carry `{NEEDS} WHAT` on their line"
    );
    assert!(
        readme().starts_with(
            "# shmpipe\n\n```sh\n# run it on the bundled photos\n\
             cargo run --release -- run assets/ -o /tmp/out --ops grayscale,blur:2 -j 4\n\
             # run the tests (installs what they need first: djpeg/cjpeg, NumPy, strace, the \
             Python package, Slurm)\n./test.sh\n```\n"
        ),
        "README opens with the two commands a newcomer runs (a CI hook parses them)"
    );
    let examples_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let examples: Vec<String> = std::fs::read_dir(&examples_dir)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    for excerpt in fenced(&readme(), "python") {
        assert!(
            examples.iter().any(|file| file.contains(&excerpt)),
            "README's Python is an excerpt of a file under examples/:\n{excerpt}"
        );
    }
}

/// README's commands, run as a newcomer would in a fresh HOME with `shmpipe` on the PATH (this
/// build standing in for `cargo install`): the examples produce what README says, the
/// completion script lands where bash looks and offers the commands but never the hidden
/// `worker`, and `man shmpipe` finds the page.
#[test]
fn readme_commands_run_in_a_fresh_home() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let home = work.join("home");
    let bin_dir = work.join("bin");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(crate::util::bin(), bin_dir.join("shmpipe")).unwrap();
    let pid = std::process::id();
    let _cleanup: Vec<crate::util::Dataset> = README_DATASETS
        .iter()
        .map(|name| crate::util::Dataset(format!("{name}-{pid}")))
        .collect();

    let mut script = String::from("set -eo pipefail\n");
    for (line, runs) in README_COMMANDS {
        let command = match runs {
            Runs::Here => line,
            Runs::As(command, _why) => command,
            Runs::Elsewhere(_where) => continue,
        };
        let command = command.replace("/tmp/", &format!("{}/", work.display()));
        let command: Vec<String> = command
            .split(' ')
            .map(|word| match README_DATASETS.contains(&word) {
                true => format!("{word}-{pid}"),
                false => word.to_string(),
            })
            .collect();
        script.push_str(&format!("echo '$ {line}'\n{}\n", command.join(" ")));
    }
    // Afterwards, in the same shell: what bash completes after `shmpipe `, and where man looks.
    script.push_str(
        "source ~/.local/share/bash-completion/completions/shmpipe\n\
         COMP_WORDS=(shmpipe ''); COMP_CWORD=1; COMP_LINE='shmpipe '; COMP_POINT=8\n\
         _shmpipe shmpipe '' shmpipe\n\
         echo \"offered: ${COMPREPLY[*]}\"\n\
         echo \"man: $(man -w shmpipe)\"\n",
    );
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOME", &home)
        .env("PATH", path)
        .env_remove("MANPATH")
        .env(
            "PYTHONPATH",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}\n{stdout}\n{stderr}");

    // The first example and the folder example: every image of assets/, under its own path.
    for dir in ["out", "gray", "thumbs"] {
        let written = crate::util::files_under(&work.join(dir));
        assert_eq!(written.len(), 10, "{dir}: {written:?}");
    }
    assert!(
        work.join("thumbs/formats/cat.jpg").exists(),
        "--format jpeg"
    );
    // NumPy: the shape README's example prints; the export; the training's epochs.
    assert!(
        stdout.contains(&format!(
            "shmpipe-photos-{pid}: 10 images, shape (10, 224, 224, 3), uint8"
        )),
        "{stdout}"
    );
    assert!(work.join("photos.npy").exists());
    assert!(
        stdout.contains("multiprocessing pool (forkserver, 2 workers)"),
        "{stdout}"
    );
    for epoch in 1..=3 {
        assert!(
            stdout.contains(&format!("epoch {epoch}: 64 images")),
            "{stdout}"
        );
    }
    // How it fails: both bad files named with their reasons, exit 1, the good one written.
    for (file, reason) in [("notes.png", "not an image"), ("cut.jpg", "truncated JPEG")] {
        assert!(
            stdout.contains(file) && stdout.contains(reason),
            "{file}: {stdout}"
        );
    }
    assert!(stdout.contains("exit code 1"), "{stdout}");
    assert_eq!(
        crate::util::files_under(&work.join("mixed-out")),
        [std::path::PathBuf::from("rocket.jpg")]
    );
    // The datasets were removed by README's own `rm` lines.
    for name in README_DATASETS {
        assert!(!std::path::Path::new(&format!("/dev/shm/shmpipe-{name}-{pid}")).exists());
    }
    // Completions: installed where bash-completion looks, the commands offered, not `worker`.
    let offered = stdout
        .lines()
        .find_map(|l| l.strip_prefix("offered: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let offered: Vec<&str> = offered.split_whitespace().collect();
    for command in ["run", "load", "completions", "man"] {
        assert!(offered.contains(&command), "{offered:?}");
    }
    assert!(!offered.contains(&"worker"), "{offered:?}");
    let man = stdout.lines().find_map(|l| l.strip_prefix("man: "));
    assert_eq!(
        man.map(std::path::PathBuf::from),
        Some(home.join(".local/share/man/man1/shmpipe.1")),
        "{stdout}"
    );
}

/// One version for the program and the Python package (the wheel carries both): Cargo.toml's,
/// in the package's pyproject.toml and its `__version__`.
#[test]
fn the_program_and_the_python_package_have_one_version() {
    let version = env!("CARGO_PKG_VERSION");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pyproject = std::fs::read_to_string(root.join("python/pyproject.toml")).unwrap();
    assert!(
        pyproject.contains(&format!("version = \"{version}\"")),
        "python/pyproject.toml is not version {version}"
    );
    let init = std::fs::read_to_string(root.join("python/shmpipe/__init__.py")).unwrap();
    assert!(
        init.contains(&format!("__version__ = \"{version}\"")),
        "shmpipe.__version__ is not {version}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shmpipe"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("shmpipe {version}")
    );
}

/// `shmpipe ops` lists every op with an example, and each example runs as `run --ops` on a real
/// image; `shmpipe ops NAME` describes one; a misspelt op, in `ops` or in `--ops`, is refused
/// with the op it is nearest to.
#[test]
fn ops_lists_every_op_each_example_runs_and_a_typo_gets_did_you_mean() {
    let listed = shmpipe(&["ops"]);
    assert_eq!(listed.status.code(), Some(0));
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let examples: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("example:   --ops "))
        .collect();
    assert_eq!(examples.len(), 17, "{text}");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 13, 77]))
        .save(input.join("a.png"))
        .unwrap();
    let dataset_wide = text
        .split("Dataset-wide ops")
        .nth(1)
        .expect("the second part");
    for example in examples {
        let out = crate::util::run(&[
            "run",
            input.to_str().unwrap(),
            "--ops",
            example,
            "-j",
            "1",
            "-q",
        ]);
        if dataset_wide.contains(&format!("--ops {example}\n")) {
            assert_eq!(out.status.code(), Some(2), "{example}");
            assert!(
                crate::util::stderr(&out).contains("dataset-wide"),
                "{example}"
            );
        } else {
            assert_eq!(
                out.status.code(),
                Some(0),
                "{example}: {}",
                crate::util::stderr(&out)
            );
        }
    }

    let one = shmpipe(&["ops", "grey"]);
    assert_eq!(one.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&one.stdout).starts_with("  grayscale\n"));

    let typo = shmpipe(&["ops", "blurr"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(crate::util::stderr(&typo).contains("did you mean blur?"));

    let run = crate::util::run(&["run", input.to_str().unwrap(), "--ops", "grayscal", "-q"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        crate::util::stderr(&run).contains("unknown op \"grayscal\": did you mean grayscale?"),
        "{}",
        crate::util::stderr(&run)
    );
    let far = crate::util::run(&["run", input.to_str().unwrap(), "--ops", "resize:9", "-q"]);
    assert!(!crate::util::stderr(&far).contains("did you mean"));
}
