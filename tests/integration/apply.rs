//! `apply` on a kept dataset: dataset-wide `normalize` gives the per-channel mean and deviation
//! computed here independently; two applies at once on one block: one runs, the other refuses,
//! and the result equals a single apply. A dataset is live only while its lock is held,
//! whatever its name looks like.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{ok, os, shmpipe, wait_for, workers_of, Dataset};

#[test]
fn normalize_uses_the_whole_datasets_mean_and_deviation() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let images: Vec<image::RgbImage> = [(31u32, 17u32, 3u32), (12, 40, 50), (25, 25, 90)]
        .iter()
        .map(|&(w, h, k)| {
            image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 7 + k) as u8,
                    (y * 5 + 2 * k) as u8,
                    ((x * y + k) % 200) as u8,
                ])
            })
        })
        .collect();
    for (i, img) in images.iter().enumerate() {
        img.save(input.join(format!("{i}.png"))).unwrap();
    }
    // Independent statistics: every pixel of every image, population deviation.
    let mut stats = Vec::new();
    for c in 0..3 {
        let values: Vec<f64> = images
            .iter()
            .flat_map(|img| img.pixels().map(move |p| p[c] as f64))
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        stats.push((mean, var.sqrt()));
    }
    let name = format!("norm{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--quiet"),
    ]);
    let said = ok(&[
        os("apply"),
        os(&name),
        os("--ops"),
        os("normalize"),
        os("-j"),
        os("2"),
    ]);
    for (c, (mean, std)) in stats.iter().enumerate() {
        assert!(
            said.contains(&format!("channel {c}: mean {mean:.3}, std {std:.3}")),
            "{said}"
        );
    }
    let out = tmp.path().join("out");
    ok(&[os("save"), os(&name), os("-o"), out.as_os_str()]);
    for (i, img) in images.iter().enumerate() {
        let got = image::open(out.join(format!("{i}.png"))).unwrap().to_rgb8();
        for (p, q) in img.pixels().zip(got.pixels()) {
            for c in 0..3 {
                let (mean, std) = stats[c];
                let want = (128.0 + 48.0 * (p[c] as f64 - mean) / std)
                    .round()
                    .clamp(0.0, 255.0);
                assert!(
                    (q[c] as f64 - want).abs() <= 1.0,
                    "image {i} channel {c}: {} vs {want}",
                    q[c]
                );
            }
        }
    }
}

#[test]
fn a_second_apply_on_a_busy_block_refuses_and_the_first_equals_a_lone_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    assert!(Command::new(crate::util::bin())
        .args([
            os("gen"),
            input.as_os_str(),
            os("--count"),
            os("6"),
            os("--size"),
            os("900x600"),
            os("--format"),
            os("png")
        ])
        .status()
        .unwrap()
        .success());
    let (busy, lone) = (
        format!("busy{}", std::process::id()),
        format!("lone{}", std::process::id()),
    );
    let _c1 = Dataset(busy.clone());
    let _c2 = Dataset(lone.clone());
    for name in [&busy, &lone] {
        ok(&[
            os("load"),
            input.as_os_str(),
            os("--name"),
            os(name),
            os("--quiet"),
        ]);
    }
    let first = Command::new(crate::util::bin())
        .args([
            "apply",
            &busy,
            "--ops",
            "blur:20,sharpen",
            "-j",
            "1",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while workers_of(pid).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first apply started its workers"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = shmpipe(&[os("apply"), os(&busy), os("--ops"), os("invert")]);
    assert_eq!(second.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("busy"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    crate::util::assert_no_leaks(pid);

    ok(&[
        os("apply"),
        os(&lone),
        os("--ops"),
        os("blur:20,sharpen"),
        os("-j"),
        os("2"),
        os("--quiet"),
    ]);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&[
        os("save"),
        os(&busy),
        os("-o"),
        a.as_os_str(),
        os("--format"),
        os("png"),
    ]);
    ok(&[
        os("save"),
        os(&lone),
        os("-o"),
        b.as_os_str(),
        os("--format"),
        os("png"),
    ]);
    for f in crate::util::files_under(&a) {
        assert!(
            std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(),
            "{}: one apply, not one and a half",
            f.display()
        );
    }
    assert!(Path::new("/dev/shm")
        .join(format!("shmpipe-{busy}"))
        .exists());
}

#[test]
fn equalize_dataset_uses_one_histogram_for_the_whole_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // Low-contrast images whose levels differ between images: one histogram over all of them.
    let images: Vec<image::RgbImage> = [(20u32, 10u32, 60u32), (15, 30, 90), (9, 9, 75)]
        .iter()
        .map(|&(w, h, base)| {
            image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (base + x) as u8,
                    (base + y) as u8,
                    (base + (x + y) / 2) as u8,
                ])
            })
        })
        .collect();
    for (i, img) in images.iter().enumerate() {
        img.save(input.join(format!("{i}.png"))).unwrap();
    }
    let mut luts = Vec::new();
    for c in 0..3 {
        let mut hist = [0u64; 256];
        for img in &images {
            for p in img.pixels() {
                hist[p[c] as usize] += 1;
            }
        }
        let total: u64 = hist.iter().sum();
        let cdf_min = *hist.iter().find(|&&n| n > 0).unwrap();
        let mut cdf = 0;
        let lut: Vec<u8> = (0..256)
            .map(|v| {
                cdf += hist[v];
                (255.0 * (cdf - cdf_min.min(cdf)) as f64 / (total - cdf_min) as f64).round() as u8
            })
            .collect();
        luts.push(lut);
    }
    let name = format!("eq{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--quiet"),
    ]);
    ok(&[
        os("apply"),
        os(&name),
        os("--ops"),
        os("equalize:dataset"),
        os("-j"),
        os("2"),
    ]);
    let out = tmp.path().join("out");
    ok(&[os("save"), os(&name), os("-o"), out.as_os_str()]);
    for (i, img) in images.iter().enumerate() {
        let got = image::open(out.join(format!("{i}.png"))).unwrap().to_rgb8();
        for (p, q) in img.pixels().zip(got.pixels()) {
            for c in 0..3 {
                assert_eq!(q[c], luts[c][p[c] as usize], "image {i} channel {c}");
            }
        }
    }
}

#[test]
fn normalize_float_exports_zero_mean_unit_deviation_and_keeps_the_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    assert!(Command::new(crate::util::bin())
        .args([
            os("gen"),
            input.as_os_str(),
            os("--count"),
            os("4"),
            os("--size"),
            os("64x48"),
            os("--format"),
            os("png")
        ])
        .status()
        .unwrap()
        .success());
    let name = format!("nf{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--quiet"),
    ]);
    let (before, after) = (tmp.path().join("before.npy"), tmp.path().join("after.npy"));
    ok(&[os("export"), os(&name), before.as_os_str()]);
    ok(&[os("apply"), os(&name), os("--ops"), os("normalize:float")]);
    ok(&[os("export"), os(&name), after.as_os_str()]);
    let script = format!(
        r#"
import json, numpy as np
u8 = np.load(r"{}"); f = np.load(r"{}")
out = {{"dtype": str(f.dtype), "shape": list(f.shape),
        "means": [float(f[..., c].mean()) for c in range(3)], "stds": [float(f[..., c].std()) for c in range(3)],
        "matches": bool(np.allclose(f, (u8 - u8.mean(axis=(0, 1, 2))) / u8.std(axis=(0, 1, 2)), atol=1e-4))}}
print(json.dumps(out))
"#,
        before.display(),
        after.display()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["dtype"], "float32");
    assert_eq!(r["shape"], serde_json::json!([4, 48, 64, 3]));
    for c in 0..3 {
        assert!(r["means"][c].as_f64().unwrap().abs() < 1e-3, "{r}");
        assert!((r["stds"][c].as_f64().unwrap() - 1.0).abs() < 1e-3, "{r}");
    }
    assert_eq!(
        r["matches"], true,
        "export computes (v - mean) / std from the u8 pixels"
    );
    // The u8 pixels themselves are unchanged.
    let again = tmp.path().join("again.npy");
    let _ = std::fs::remove_file(&again);
    ok(&[os("apply"), os(&name), os("--ops"), os("invert,invert")]);
    ok(&[os("export"), os(&name), again.as_os_str()]);
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&before).unwrap());
}

/// Issue 22: a dataset named like a live pid ("1", "2024-train") counted as live for 10 s after
/// each change, as if its name held its creator's pid: `rm` refused it right after a load, and a
/// killed load was listed as "live loading". Liveness comes from the block's lock alone. The
/// names here start with this test's own pid, a live one.
#[test]
fn a_dataset_named_like_a_live_pid_is_judged_by_its_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for (file, seed) in [("a.png", 1u8), ("held.png", 2)] {
        image::RgbImage::from_pixel(16, 16, image::Rgb([seed, 99, 199]))
            .save(input.join(file))
            .unwrap();
    }
    let pid = std::process::id().to_string();
    for name in [pid.clone(), format!("{pid}-train")] {
        let _dataset = crate::util::Dataset(name.clone());
        crate::util::ok(&[
            os("load"),
            input.as_os_str(),
            os("--name"),
            os(&name),
            os("-q"),
        ]);
        let rm = shmpipe(&[os("rm"), os(&name)]);
        assert_eq!(
            rm.status.code(),
            Some(0),
            "rm {name} right after its load: {}",
            String::from_utf8_lossy(&rm.stderr)
        );
        assert!(!Path::new("/dev/shm")
            .join(format!("shmpipe-{name}"))
            .exists());
    }

    // A load killed while its worker holds an image: incomplete, not live.
    let name = format!("{pid}-killed");
    let _dataset = crate::util::Dataset(name.clone());
    let mut load = Command::new(crate::util::bin())
        .args([
            os("load"),
            input.as_os_str(),
            os("--name"),
            os(&name),
            os("-j"),
            os("1"),
            os("-q"),
        ])
        .env(shmpipe_worker::hooks::STALL_ENV, "held.png:60000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let load_pid = load.id();
    let block = Path::new("/dev/shm").join(format!("shmpipe-{name}"));
    wait_for("the load's worker", || {
        block.exists() && workers_of(load_pid).len() == 1
    });
    load.kill().unwrap();
    load.wait().unwrap();
    wait_for("the worker to follow", || workers_of(load_pid).is_empty());
    let ls = shmpipe(&[os("ls"), os("--json")]);
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == format!("shmpipe-{name}"))
        .cloned()
        .expect("ls shows the killed load");
    assert_eq!(entry["live"], false, "{entry}");
    assert_eq!(entry["state"], "incomplete", "{entry}");
    let rm = shmpipe(&[os("rm"), os(&name)]);
    assert_eq!(
        rm.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
}
