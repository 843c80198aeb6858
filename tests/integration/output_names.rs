//! `run --output-name TEMPLATE` through the binary: the names each field gives, outputs decoded
//! and compared with their sources, the dry run naming exactly what the run writes, a rerun with
//! `--skip-existing` finding the templated names, and the templates that must be refused before
//! any block or output (two images given one name, a name leaving `-o`, a wrong extension).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::util::{blocks_dir, files_under, os, own_backing, run, stderr};

/// in/a/x.png, in/b/x.png, in/top.png: two sources share a stem.
fn inputs(root: &Path) -> PathBuf {
    let input = root.join("in");
    for (name, seed) in [("a/x.png", 10u8), ("b/x.png", 20), ("top.png", 30)] {
        let path = input.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(11, 6, |x, y| {
            image::Rgb([seed, (x * 20) as u8, (y * 40) as u8])
        })
        .save(&path)
        .unwrap();
    }
    input
}

fn named_run(input: &Path, out: &Path, template: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--output-name"),
        os(template),
        os("-j"),
        os("2"),
    ];
    args.extend(extra.iter().map(|e| os(e)));
    run(&args)
}

fn names(out: &Path) -> Vec<String> {
    files_under(out)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

fn same_pixels(output: &Path, source: &Path) {
    let (a, b) = (image::open(output).unwrap(), image::open(source).unwrap());
    assert_eq!(
        a.to_rgb8(),
        b.to_rgb8(),
        "{} from {}",
        output.display(),
        source.display()
    );
}

#[test]
fn each_field_names_the_outputs_and_their_pixels_are_their_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let out = tmp.path().join("suffix");
    let done = named_run(&input, &out, "{dir}/{stem}_small.{ext}", &["-q"]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(
        names(&out),
        ["a/x_small.png", "b/x_small.png", "top_small.png"]
    );
    same_pixels(&out.join("a/x_small.png"), &input.join("a/x.png"));
    same_pixels(&out.join("b/x_small.png"), &input.join("b/x.png"));

    // Numbered in sorted order of the sources, zero-padded, in one flat folder; {ext} follows
    // --format.
    let out = tmp.path().join("numbered");
    let done = named_run(
        &input,
        &out,
        "img-{index:3}.{ext}",
        &["--format", "bmp", "-q"],
    );
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(names(&out), ["img-000.bmp", "img-001.bmp", "img-002.bmp"]);
    for (n, source) in ["a/x.png", "b/x.png", "top.png"].iter().enumerate() {
        same_pixels(&out.join(format!("img-{n:03}.bmp")), &input.join(source));
    }
}

#[test]
fn the_dry_run_names_what_the_run_writes_and_a_rerun_finds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let out = tmp.path().join("out");
    let template = "{index}_{name}";
    let dry = named_run(&input, &out, template, &["--dry-run", "--json"]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let plan: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    let planned: BTreeSet<String> = plan["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["output"].as_str().unwrap().to_string())
        .collect();
    assert!(!out.exists(), "the dry run created -o");
    let done = named_run(&input, &out, template, &["-q"]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let written: BTreeSet<String> = files_under(&out)
        .iter()
        .map(|f| out.join(f).display().to_string())
        .collect();
    assert_eq!(written, planned);
    assert_eq!(names(&out), ["0_x.png", "1_x.png", "2_top.png"]);

    // One output lost: --skip-existing finds the others under their templated names and
    // writes the missing one alone.
    std::fs::remove_file(out.join("1_x.png")).unwrap();
    let again = named_run(&input, &out, template, &["--skip-existing", "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["files_existing"], 2, "{summary}");
    assert_eq!(summary["images_ok"], 1, "{summary}");
    same_pixels(&out.join("1_x.png"), &input.join("b/x.png"));
}

#[test]
fn a_template_that_cannot_name_every_image_apart_is_refused_before_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let out = tmp.path().join("out");
    // Blocks go to a folder of this test's own, so other tests' blocks do not count.
    let _backing = own_backing();
    for (template, says) in [
        (
            "{stem}.{ext}",
            "gives a/x.png and b/x.png one name, x.png: add {dir} or {index}",
        ),
        ("../{name}", "goes up out of the output folder"),
        ("/tmp/{name}", "not an absolute path"),
        (
            "{dir}/{stem}.jpg",
            "does not end in an extension of its png output",
        ),
        ("{dir}/{size}.png", "{size} is not a field"),
        ("all.png", "names every image alike"),
    ] {
        let done = named_run(&input, &out, template, &[]);
        let err = stderr(&done);
        assert_eq!(done.status.code(), Some(2), "{template}: {err}");
        assert!(err.contains(says), "{template}: {err}");
        assert!(!out.exists(), "{template} left {}", out.display());
    }
    // Nor inside the input folder, where the run would mark its output folder, nor any folder
    // created on the way to it; a folder that was there stays.
    let listing = files_under(&input);
    let inside = input.join("made/deeper");
    let done = named_run(&input, &inside, "all.png", &[]);
    assert_eq!(done.status.code(), Some(2), "{}", stderr(&done));
    assert!(
        !input.join("made").exists(),
        "a refused run left its folders"
    );
    assert_eq!(files_under(&input), listing);
    let there = tmp.path().join("there");
    std::fs::create_dir(&there).unwrap();
    let done = named_run(&input, &there.join("new"), "all.png", &[]);
    assert_eq!(done.status.code(), Some(2), "{}", stderr(&done));
    assert!(there.is_dir() && !there.join("new").exists());
    let blocks: Vec<_> = std::fs::read_dir(blocks_dir()).unwrap().flatten().collect();
    assert!(blocks.is_empty(), "a refused run made {blocks:?}");
    // Numbers would repeat across shards.
    let done = named_run(&input, &out, "{index}.png", &["--shard", "1/2"]);
    assert_eq!(done.status.code(), Some(2));
    assert!(stderr(&done).contains("shards"), "{}", stderr(&done));
}
