//! What comes out matches what went in: an output's extension matches its content, special files
//! are listed rather than read or silently dropped, a flag that changes nothing says so, a run
//! aborted after writing outputs does not claim that nothing was created, and no two images of a
//! `save` are written to one file.

use std::process::Command;

use crate::util::{assets, files_under, os};

fn run_in(input: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--json"),
    ];
    args.extend(extra.iter().map(|a| os(a)));
    crate::util::run(&args)
}

#[test]
fn png_data_named_jpg_is_written_with_a_png_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(assets().join("coffee.png"), input.join("x.jpg")).unwrap();
    std::fs::copy(assets().join("rocket.jpg"), input.join("r.JPG")).unwrap();
    let out = tmp.path().join("out");
    let output = run_in(&input, &out, &["--ops", "invert"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        crate::util::stderr(&output)
    );
    assert_eq!(
        files_under(&out),
        vec![std::path::PathBuf::from("r.JPG"), "x.png".into()]
    );
    let written = std::fs::read(out.join("x.png")).unwrap();
    assert_eq!(
        image::guess_format(&written).unwrap(),
        image::ImageFormat::Png
    );
    let written = std::fs::read(out.join("r.JPG")).unwrap();
    assert_eq!(
        image::guess_format(&written).unwrap(),
        image::ImageFormat::Jpeg
    );
}

#[test]
fn a_fifo_with_an_image_name_is_listed_and_other_special_files_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(assets().join("coffee.png"), input.join("a.png")).unwrap();
    for name in ["pipe.png", "notes"] {
        let status = Command::new("mkfifo")
            .arg(input.join(name))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = tmp.path().join("out");
    let output = run_in(&input, &out, &[]);
    // Exit 1: one input could not be read; and it returned (a FIFO read would block).
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        crate::util::stderr(&output)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["images_ok"], 1);
    assert_eq!(summary["images_failed"], 1);
    let failure = &summary["failures"][0];
    assert!(failure["path"].as_str().unwrap().ends_with("pipe.png"));
    assert!(
        failure["reason"].as_str().unwrap().contains("a FIFO"),
        "{failure}"
    );
    assert_eq!(summary["files_skipped"], 1, "{summary}");
}

#[test]
fn a_flag_with_no_effect_on_any_output_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let input = assets().join("nested");
    let output = run_in(&input, &out, &["--quality", "50"]);
    assert_eq!(output.status.code(), Some(0));
    let said = crate::util::stderr(&output);
    assert_eq!(
        said.matches("--quality has no effect").count(),
        1,
        "one warning: {said}"
    );
    let out2 = tmp.path().join("out2");
    let output = run_in(&input, &out2, &["--quality", "50", "--format", "jpeg"]);
    assert!(!crate::util::stderr(&output).contains("no effect"));
    let out3 = tmp.path().join("out3");
    let output = run_in(
        &input,
        &out3,
        &["--png-compression", "best", "--format", "jpeg"],
    );
    assert!(crate::util::stderr(&output).contains("--png-compression has no effect"));
    // --quality sets lossy WebP too; --lossless concerns WebP alone.
    let out4 = tmp.path().join("out4");
    let output = run_in(&input, &out4, &["--quality", "50", "--format", "webp"]);
    assert!(!crate::util::stderr(&output).contains("no effect"));
    let out5 = tmp.path().join("out5");
    let output = run_in(&input, &out5, &["--lossless"]);
    assert!(crate::util::stderr(&output).contains("--lossless has no effect"));
}

#[test]
fn a_run_aborted_after_writing_outputs_exits_1_not_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The worker dies at rocket.jpg after writing the bigger images; every replacement then
    // fails to start, so the run gives up with outputs on disk.
    let child = Command::new(crate::util::bin())
        .args([
            os("run"),
            assets().as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("-j"),
            os("1"),
            os("-q"),
        ])
        .env(shmpipe_worker::hooks::CRASH_ENV, "rocket.jpg")
        .env(shmpipe_worker::hooks::FAIL_START_ENV, "1")
        .output()
        .unwrap();
    assert!(!files_under(&out).is_empty(), "outputs were written first");
    assert_eq!(
        child.status.code(),
        Some(1),
        "{}",
        crate::util::stderr(&child)
    );
    assert!(crate::util::stderr(&child).contains("run aborted"));
}

/// Issue 22, item 4: `save` gives each output path to the first image (in sorted order) that
/// maps to it, as `run` does, and lists the others with the reason; before, `a.bmp` and `a.tiff`
/// both went to `a.png` (and `b.jpg` holding PNG data and `b.png` both to `b.png`) under
/// "saved 4 of 4", exit 0.
#[test]
fn save_writes_no_two_images_to_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let picture = |seed: u8| {
        image::RgbImage::from_fn(16, 12, |x, y| {
            image::Rgb([x as u8 * 9 + seed, y as u8 * 7, seed.wrapping_mul(3)])
        })
    };
    picture(1).save(input.join("a.bmp")).unwrap();
    picture(2).save(input.join("a.tiff")).unwrap();
    picture(3)
        .save_with_format(input.join("b.jpg"), image::ImageFormat::Png)
        .unwrap();
    picture(4).save(input.join("b.png")).unwrap();
    let name = format!("saveclash{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    crate::util::ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("-q"),
    ]);
    let save = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![os("save"), os(&name), os("-o"), out.as_os_str()];
        args.extend(extra.iter().map(|a| os(a)));
        crate::util::run(&args)
    };
    let saved_as = |path: std::path::PathBuf| image::open(path).unwrap().to_rgb8();

    let png = tmp.path().join("png");
    let output = save(&png, &["--format", "png"]);
    let said = crate::util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("failed: a.tiff: output ")
            && said.contains("a.png would overwrite the output of a.bmp"),
        "{said}"
    );
    assert!(
        said.contains("failed: b.png: output ")
            && said.contains("b.png would overwrite the output of b.jpg"),
        "{said}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("saved 2 of 4 images"));
    assert_eq!(
        files_under(&png),
        ["a.png", "b.png"].map(Into::<std::path::PathBuf>::into)
    );
    assert!(saved_as(png.join("a.png")) == picture(1), "a.bmp's pixels");
    assert!(saved_as(png.join("b.png")) == picture(3), "b.jpg's pixels");

    // Each image in its own format: b.jpg holds a PNG, so its output is b.png too.
    let own = tmp.path().join("own");
    let output = save(&own, &[]);
    let said = crate::util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("failed: b.png: output ")
            && said.contains("b.png would overwrite the output of b.jpg"),
        "{said}"
    );
    assert!(!said.contains("a.tiff"), "{said}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("saved 3 of 4 images"));
    assert_eq!(
        files_under(&own),
        ["a.bmp", "a.tiff", "b.png"].map(Into::<std::path::PathBuf>::into)
    );
    assert!(saved_as(own.join("b.png")) == picture(3), "b.jpg's pixels");
}

/// `shmpipe ARGS` started by a shell under `umask MASK`, to completion, leaving nothing behind.
fn under_umask(mask: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
        .arg(crate::util::bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let out = crate::util::finish(child, &format!("{args:?} under umask {mask}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        crate::util::stderr(&out)
    );
    out
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Issue 27: exports and plots came out 0600 (a temporary file's mode, kept through the rename).
/// Every file we create for the user honours the umask as any tool's does: `gen`'s images,
/// `run`'s outputs and shard manifest, an export and a PNG plot are 0644 under umask 022 and
/// 0600 under 077. A dataset's block stays 0600 whatever the umask.
#[test]
fn files_we_create_honour_the_umask_and_blocks_stay_private() {
    for (mask, want) in [("022", 0o644), ("077", 0o600)] {
        let tmp = tempfile::tempdir().unwrap();
        let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
        under_umask(
            mask,
            &[
                os("gen"),
                input.as_os_str(),
                os("--count"),
                os("2"),
                os("--size"),
                os("32x24"),
            ],
        );
        under_umask(
            mask,
            &[
                os("run"),
                input.as_os_str(),
                os("-o"),
                out.as_os_str(),
                os("--shard"),
                os("0/1"),
                os("-q"),
            ],
        );
        let made: Vec<_> = files_under(&input)
            .into_iter()
            .map(|f| input.join(f))
            .chain(files_under(&out).into_iter().map(|f| out.join(f)))
            .filter(|f| !f.ends_with(".shmpipe-output"))
            .collect();
        assert_eq!(made.len(), 5, "{made:?}");
        assert!(made
            .iter()
            .any(|f| f.ends_with(".shmpipe-shard-0-of-1.json")));
        for file in &made {
            assert_eq!(mode(file), want, "{} under umask {mask}", file.display());
        }

        let name = format!("umask{mask}{}", std::process::id());
        let _dataset = crate::util::Dataset(name.clone());
        under_umask(
            mask,
            &[
                os("load"),
                input.as_os_str(),
                os("--name"),
                os(&name),
                os("-q"),
            ],
        );
        let block = std::path::Path::new("/dev/shm").join(format!("shmpipe-{name}"));
        assert_eq!(mode(&block), 0o600, "the block under umask {mask}");
        let export = tmp.path().join("pixels.npy");
        under_umask(mask, &[os("export"), os(&name), export.as_os_str()]);
        assert_eq!(mode(&export), want, "the export under umask {mask}");

        let plot = tmp.path().join("memory.png");
        under_umask(
            mask,
            &[
                os("bench"),
                os("memory"),
                os("--generate"),
                os("2MiB"),
                os("--image-size"),
                os("64x48"),
                os("-j"),
                os("1"),
                os("--plot"),
                plot.as_os_str(),
            ],
        );
        assert_eq!(mode(&plot), want, "the plot under umask {mask}");
    }
}
