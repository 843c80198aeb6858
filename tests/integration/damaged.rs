//! Damaged files are failures, never grey images: JPEGs cut short or with corrupt entropy-coded
//! data fail on every decode path (RGB, the luma plane of a grayscale-first chain, resized),
//! naming the file, and `--allow-truncated` keeps them as warnings. A truncated PNG fails too.

use std::path::Path;

use crate::util::{assets, os, run, stderr};

/// The cuts and the corruption of issue 13, each beside one good copy of the same photo.
const DAMAGED: [&str; 5] = [
    "cut10.jpg",
    "cut50.jpg",
    "cut90.jpg",
    "cut99.jpg",
    "xored.jpg",
];

/// Where the first scan's entropy-coded data starts: past the SOS segment.
fn scan_start(jpeg: &[u8]) -> usize {
    let mut at = 2;
    loop {
        assert_eq!(jpeg[at], 0xFF, "marker expected at {at}");
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        let marker = jpeg[at + 1];
        at += 2 + len;
        if marker == 0xDA {
            return at;
        }
    }
}

fn build(input: &Path) {
    std::fs::create_dir_all(input).unwrap();
    let jpeg = std::fs::read(assets().join("rocket.jpg")).unwrap();
    std::fs::write(input.join("good.jpg"), &jpeg).unwrap();
    for percent in [10, 50, 90, 99] {
        let cut = &jpeg[..jpeg.len() * percent / 100];
        std::fs::write(input.join(format!("cut{percent}.jpg")), cut).unwrap();
    }
    // 200 bytes in the middle of the scan XOR-ed with a fixed pseudo-random sequence.
    let mut xored = jpeg.clone();
    let start = scan_start(&jpeg);
    let middle = start + (jpeg.len() - start) / 2;
    let mut state = 0x9E37_79B9u32;
    for b in &mut xored[middle..middle + 200] {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *b ^= state as u8;
    }
    std::fs::write(input.join("xored.jpg"), xored).unwrap();
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// `(file name, reason)` of each entry of a summary list.
fn entries(list: &serde_json::Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = Path::new(f["path"].as_str().unwrap());
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

fn expect_damage(name: &str, reason: &str) {
    let expected = if name.starts_with("cut") {
        "truncated JPEG: data ends before the last row"
    } else {
        "corrupt JPEG data"
    };
    assert!(reason.contains(expected), "{name}: {reason:?}");
}

/// The decode paths: RGB through the general path, the luma plane, resized at decode.
const PATHS: [&[&str]; 3] = [
    &["--ops", "invert"],
    &["--ops", "grayscale"],
    &["--resize", "64x64"],
];

/// `run INPUT -o OUT -j 2 --json`, with one decode path's flags and `extra`.
fn run_on_path(
    input: &Path,
    out: &Path,
    path_args: &[&str],
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("-j"),
        os("2"),
        os("--json"),
    ];
    args.extend(extra.iter().chain(path_args).map(|a| os(a)));
    run(&args)
}

#[test]
fn damaged_jpegs_fail_on_every_decode_path_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    build(&input);
    for (k, path_args) in PATHS.iter().enumerate() {
        let out_dir = tmp.path().join(format!("out{k}"));
        let out = run_on_path(&input, &out_dir, path_args, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{path_args:?}: {}",
            stderr(&out)
        );
        let summary = json(&out);
        assert_eq!(summary["images_ok"], 1, "{path_args:?}");
        let failures = entries(&summary["failures"]);
        let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, DAMAGED, "{path_args:?}");
        for (name, reason) in &failures {
            expect_damage(name, reason);
        }
        assert_eq!(summary["warnings"].as_array().unwrap().len(), 0);
        // Only the good image has an output.
        let written: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(written, ["good.jpg"], "{path_args:?}");
    }
}

#[test]
fn allow_truncated_keeps_damaged_jpegs_as_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    build(&input);
    for (k, path_args) in PATHS.iter().enumerate() {
        let out_dir = tmp.path().join(format!("out{k}"));
        let out = run_on_path(&input, &out_dir, path_args, &["--allow-truncated"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{path_args:?}: {}",
            stderr(&out)
        );
        let summary = json(&out);
        assert_eq!(summary["images_ok"], 6, "{path_args:?}");
        assert_eq!(summary["images_failed"], 0, "{path_args:?}");
        let warnings = entries(&summary["warnings"]);
        let names: Vec<&str> = warnings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, DAMAGED, "{path_args:?}");
        for (name, reason) in &warnings {
            expect_damage(name, reason);
            assert!(out_dir.join(name).is_file(), "{name} written");
        }
    }
    // The text summary counts and lists them.
    let out = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        tmp.path().join("text").as_os_str(),
        os("--allow-truncated"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("5 images kept with damage (--allow-truncated)"),
        "{text}"
    );
    for name in DAMAGED {
        assert!(
            text.lines()
                .any(|l| l.contains("warning:") && l.contains(name)),
            "{name} listed: {text}"
        );
    }
}

#[test]
fn a_truncated_png_fails_with_or_without_allow_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let png = std::fs::read(assets().join("coffee.png")).unwrap();
    std::fs::write(input.join("cut.png"), &png[..png.len() / 2]).unwrap();
    for extra in [None, Some("--allow-truncated")] {
        let mut args = vec![
            os("run"),
            input.as_os_str(),
            os("--ops"),
            os("invert"),
            os("--json"),
        ];
        args.extend(extra.map(os));
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        let summary = json(&out);
        let failures = entries(&summary["failures"]);
        assert_eq!(failures.len(), 1, "{extra:?}");
        assert_eq!(failures[0].0, "cut.png");
        assert!(!failures[0].1.is_empty());
    }
}

/// libjpeg-turbo's own verdict on a file, from its `djpeg`: `Some(true)` when it decodes with
/// no warning, `Some(false)` when it warns (exit 2: "Corrupt JPEG data: ...", "Premature end of
/// JPEG file"), None when it cannot decode the file at all (exit 1).
fn djpeg_verdict(path: &Path) -> Option<bool> {
    let out = std::process::Command::new("djpeg")
        .args(["-outfile", "/dev/null"])
        .arg(path)
        .output()
        .expect("djpeg (libjpeg-turbo-progs) is installed by ./test.sh");
    match out.status.code() {
        Some(0) => Some(true),
        Some(2) => Some(false),
        _ => None,
    }
}

/// Runs `cjpeg ARGS` on `ppm` and gives the JPEG it writes.
fn cjpeg(ppm: &Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("cjpeg")
        .args(args)
        .arg(ppm)
        .output()
        .expect("cjpeg (libjpeg-turbo-progs) is installed by ./test.sh");
    assert!(out.status.success(), "cjpeg {args:?}: {}", stderr(&out));
    out.stdout
}

/// A seeded xorshift generator: the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The positions of the restart markers (FF D0..D7) after `from`.
fn restart_markers(jpeg: &[u8], from: usize) -> Vec<usize> {
    (from..jpeg.len() - 1)
        .filter(|&i| jpeg[i] == 0xFF && (0xD0..=0xD7).contains(&jpeg[i + 1]))
        .collect()
}

/// Builds the corpus of the verdict test in `input`: for each of five encodings of two real
/// photos (baseline 4:2:0 and 4:4:4, progressive, restart markers every MCU row and every MCU,
/// progressive with restart markers), the whole file and each damage of issue 22 (cut, cut and
/// re-terminated with FF D9, a restart marker dropped or renumbered, the SOF height changed),
/// two multi-picture files (a second JPEG after the first, as MPO and MPF carry), and 220
/// seeded mutations (bit flips and byte changes in the scan data, cuts re-terminated or not).
fn verdict_corpus(input: &Path, work: &Path) {
    std::fs::create_dir_all(input).unwrap();
    let mut bases = Vec::new();
    for photo in ["rocket.jpg", "seeding.jpg"] {
        let ppm = work.join(format!("{photo}.ppm"));
        let out = std::process::Command::new("djpeg")
            .args(["-pnm", "-outfile"])
            .arg(&ppm)
            .arg(assets().join(photo))
            .output()
            .expect("djpeg");
        assert!(out.status.success(), "{}", stderr(&out));
        for (kind, args) in [
            ("base", &["-quality", "90"][..]),
            ("444", &["-quality", "90", "-sample", "1x1"][..]),
            ("prog", &["-quality", "85", "-progressive"][..]),
            ("rst", &["-quality", "85", "-restart", "1"][..]),
            ("rstb", &["-quality", "85", "-restart", "1b"][..]),
            (
                "prst",
                &["-quality", "85", "-progressive", "-restart", "1"][..],
            ),
        ] {
            let name = format!("{}-{kind}", &photo[..photo.len() - 4]);
            bases.push((name, cjpeg(&ppm, args)));
        }
    }
    let write = |name: String, bytes: &[u8]| std::fs::write(input.join(name), bytes).unwrap();
    for (name, jpeg) in &bases {
        write(format!("{name}.jpg"), jpeg);
        let half = jpeg.len() / 2;
        write(format!("{name}-cut.jpg"), &jpeg[..half]);
        write(
            format!("{name}-cut-eoi.jpg"),
            &[&jpeg[..half], &[0xFF, 0xD9][..]].concat(),
        );
        // A marker libjpeg does not know, in the middle of the data: it cannot go on at all.
        let marker = [&jpeg[..half], &[0xFF, 0x73][..], &jpeg[half..]].concat();
        write(format!("{name}-marker.jpg"), &marker);
        let rst = restart_markers(jpeg, scan_start(jpeg));
        if let Some(&at) = rst.get(rst.len() / 2) {
            let dropped = [&jpeg[..at], &jpeg[at + 2..]].concat();
            write(format!("{name}-rst-dropped.jpg"), &dropped);
            let mut renumbered = jpeg.clone();
            renumbered[at + 1] = 0xD0 + (renumbered[at + 1] - 0xD0 + 3) % 8;
            write(format!("{name}-rst-renumbered.jpg"), &renumbered);
        }
        // The SOF's height, 16 rows more and 16 fewer than the data holds.
        let sof = (2..jpeg.len() - 1)
            .find(|&i| jpeg[i] == 0xFF && matches!(jpeg[i + 1], 0xC0..=0xC2))
            .unwrap();
        let height = u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]);
        for (tag, h) in [("taller", height + 16), ("shorter", height - 16)] {
            let mut changed = jpeg.clone();
            changed[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
            write(format!("{name}-sof-{tag}.jpg"), &changed);
        }
    }
    // Multi-picture files: good, and ok on every path.
    write(
        "mpo-2.jpg".into(),
        &[&bases[0].1[..], &bases[6].1[..]].concat(),
    );
    write(
        "mpo-3.jpg".into(),
        &[&bases[7].1[..], &bases[1].1[..], &bases[2].1[..]].concat(),
    );
    let mut rng = Rng(0x5EED_2022_0001);
    for i in 0..220 {
        let (_, jpeg) = &bases[rng.below(bases.len())];
        let start = scan_start(jpeg);
        let mut bytes = jpeg.clone();
        let at = start + rng.below(jpeg.len() - 2 - start);
        match rng.below(5) {
            0 | 1 => bytes[at] ^= 1 << rng.below(8),
            2 => bytes[at] = rng.next() as u8,
            3 => bytes.truncate(at),
            _ => {
                bytes.truncate(at);
                bytes.extend_from_slice(&[0xFF, 0xD9]);
            }
        }
        write(format!("fuzz-{i:03}.jpg"), &bytes);
    }
}

/// The file names of a summary's failures.
fn failed_names(summary: &serde_json::Value) -> Vec<String> {
    entries(&summary["failures"])
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// Issue 22's acceptance: on every decode path (RGB, the luma plane, shrink-on-load, the luma
/// plane shrunk, `load --resize`) an image fails exactly when libjpeg-turbo's `djpeg` warns or
/// fails on it, and every other file is ok: crafted damage of every kind, multi-picture files,
/// and 220 seeded mutations of real photos. Under `--allow-truncated` a file djpeg only warns on
/// is kept and listed, and one it cannot decode still fails.
#[test]
fn every_decode_path_gives_libjpeg_turbos_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    verdict_corpus(&input, tmp.path());
    let mut files: Vec<String> = std::fs::read_dir(&input)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let verdicts: Vec<(String, Option<bool>)> = files
        .iter()
        .map(|f| (f.clone(), djpeg_verdict(&input.join(f))))
        .collect();
    let bad = |keep: fn(Option<bool>) -> bool| -> Vec<String> {
        let mut names: Vec<String> = verdicts
            .iter()
            .filter(|(_, v)| keep(*v))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    };
    let refused = bad(|v| v != Some(true));
    eprintln!(
        "{} files: {} ok, {} warned on, {} undecodable (djpeg)",
        files.len(),
        bad(|v| v == Some(true)).len(),
        bad(|v| v == Some(false)).len(),
        bad(|v| v.is_none()).len()
    );
    // The corpus holds all three verdicts, and every crafted damage is one djpeg refuses.
    assert!(refused.len() > 60, "{} refused", refused.len());
    assert!(bad(|v| v.is_none()).len() > 5);
    assert!(bad(|v| v == Some(true)).len() > 30);
    for (name, verdict) in &verdicts {
        let crafted = ["-cut", "-rst-", "-sof-", "-marker"]
            .iter()
            .any(|t| name.contains(t));
        if crafted && !name.contains("-sof-shorter") {
            assert_ne!(*verdict, Some(true), "djpeg accepts {name}");
        }
        if name.starts_with("mpo-") {
            assert_eq!(*verdict, Some(true), "djpeg refuses {name}");
        }
    }
    for path_args in [
        &["--ops", "invert"][..],
        &["--ops", "grayscale"][..],
        &["--resize", "80x80"][..],
        &["--ops", "grayscale", "--resize", "80x80"][..],
    ] {
        let mut args = vec![
            os("run"),
            input.as_os_str(),
            os("-j"),
            os("2"),
            os("--json"),
        ];
        args.extend(path_args.iter().map(|a| os(a)));
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{path_args:?}: {}",
            stderr(&out)
        );
        let summary = json(&out);
        assert_eq!(failed_names(&summary), refused, "{path_args:?}");
        assert_eq!(
            summary["images_ok"],
            files.len() - refused.len(),
            "{path_args:?}"
        );
    }
    // A kept dataset resized at load.
    let name = format!("verdict-{}", std::process::id());
    let out = run(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--resize"),
        os("80x80"),
        os("-j"),
        os("2"),
        os("--json"),
    ]);
    let summary = json(&out);
    let _ = run(&[os("rm"), os(&name)]);
    assert_eq!(
        failed_names(&summary),
        refused,
        "load --resize: {}",
        stderr(&out)
    );
    // --allow-truncated keeps what djpeg only warns on.
    let out = run(&[
        os("run"),
        input.as_os_str(),
        os("--ops"),
        os("grayscale"),
        os("--allow-truncated"),
        os("--json"),
    ]);
    let summary = json(&out);
    assert_eq!(
        failed_names(&summary),
        bad(|v| v.is_none()),
        "{}",
        stderr(&out)
    );
    let kept: Vec<String> = entries(&summary["warnings"])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(kept, bad(|v| v == Some(false)));
}

/// A multi-picture file (MPO: a second JPEG after the first picture's end marker) decodes to
/// its first picture on every path, exactly as the first picture alone does.
#[test]
fn a_multi_picture_jpeg_is_its_first_picture() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let first = std::fs::read(assets().join("rocket.jpg")).unwrap();
    let second = std::fs::read(assets().join("seeding.jpg")).unwrap();
    std::fs::write(input.join("alone.jpg"), &first).unwrap();
    std::fs::write(input.join("mpo.jpg"), [&first[..], &second[..]].concat()).unwrap();
    for (k, path_args) in PATHS.iter().enumerate() {
        let out_dir = tmp.path().join(format!("out{k}"));
        let mut args = vec![
            os("run"),
            input.as_os_str(),
            os("-o"),
            out_dir.as_os_str(),
            os("--format"),
            os("png"),
        ];
        args.extend(path_args.iter().map(|a| os(a)));
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{path_args:?}: {}",
            stderr(&out)
        );
        let alone = image::open(out_dir.join("alone.png")).unwrap();
        let mpo = image::open(out_dir.join("mpo.png")).unwrap();
        assert!(alone == mpo, "{path_args:?}");
    }
}
