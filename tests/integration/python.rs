//! Named datasets from Python with real NumPy: `load` a folder, attach by name from a Python
//! process, see exactly the pixels Rust decoded, write some in place, `save` them, `export` a
//! uniform dataset for `numpy.load`, and check that Python never unlinks the block.
//!
//! Needs python3 with numpy (.ci/run installs it with pip).

use std::path::Path;
use std::process::Command;

use crate::util::{ok, os, Dataset};

fn python(script: &str) -> serde_json::Value {
    let module_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PYTHONPATH", module_dir)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed: {stderr}");
    assert!(
        !stderr.contains("leaked shared_memory"),
        "the resource tracker got involved: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "python printed JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn block_exists(name: &str) -> bool {
    Path::new("/dev/shm")
        .join(format!("shmpipe-{name}"))
        .exists()
}

#[test]
fn python_sees_and_edits_the_pixels_rust_decoded_and_never_unlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let sizes = [(40u32, 30u32), (17, 23), (64, 8)];
    let names = ["a.png", "b.png", "sub/c.png"];
    for (i, ((w, h), name)) in sizes.iter().zip(names).enumerate() {
        image::RgbImage::from_fn(*w, *h, |x, y| {
            image::Rgb([(x * 5 + i as u32) as u8, (y * 9) as u8, (x ^ y) as u8])
        })
        .save(input.join(name))
        .unwrap();
    }
    let name = format!("py{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("-j"),
        os("2"),
        os("--quiet"),
    ]);
    assert!(block_exists(&name));

    let seen = python(&format!(
        r#"
import json, shmpipe
ds = shmpipe.attach("{name}", writable=True)
out = {{"paths": list(ds.paths), "shapes": [list(a.shape) for a in ds.images],
        "sums": [int(a.astype("uint64").sum()) for a in ds.images],
        "pixel": [int(v) for v in ds.images[1][5, 7]], "array": ds.array is None}}
ds.images[0][0:4, 0:4, :] = 255
del out["array"]
ds.close()
print(json.dumps(out))
"#
    ));
    assert!(block_exists(&name), "the block survives the Python process");
    for (i, rel) in names.iter().enumerate() {
        let img = image::open(input.join(rel)).unwrap().to_rgb8();
        assert_eq!(seen["paths"][i], *rel);
        assert_eq!(
            seen["shapes"][i],
            serde_json::json!([img.height(), img.width(), 3])
        );
        let sum: u64 = img.as_raw().iter().map(|&v| v as u64).sum();
        assert_eq!(
            seen["sums"][i], sum,
            "{rel}: Python sees the pixels Rust decoded"
        );
    }
    let b = image::open(input.join("b.png")).unwrap().to_rgb8();
    assert_eq!(seen["pixel"], serde_json::json!(b.get_pixel(7, 5).0));

    let out = tmp.path().join("out");
    ok(&[os("save"), os(&name), os("-o"), out.as_os_str()]);
    let saved = image::open(out.join("a.png")).unwrap().to_rgb8();
    let original = image::open(input.join("a.png")).unwrap().to_rgb8();
    for (x, y, p) in saved.enumerate_pixels() {
        let expected = if x < 4 && y < 4 {
            image::Rgb([255, 255, 255])
        } else {
            *original.get_pixel(x, y)
        };
        assert_eq!(*p, expected, "saved pixel ({x}, {y}) carries Python's edit");
    }
    assert!(
        image::open(out.join("sub/c.png")).unwrap().to_rgb8()
            == image::open(input.join("sub/c.png")).unwrap().to_rgb8()
    );

    // A ragged dataset has no (N, H, W, C) array and cannot be exported.
    let refused = Command::new(crate::util::bin())
        .args([
            os("export"),
            os(&name),
            tmp.path().join("x.npy").as_os_str(),
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resize WxH --fit cover"));

    ok(&[os("rm"), os(&name)]);
    assert!(!block_exists(&name), "rm removes it");
}

#[test]
fn a_uniform_dataset_is_one_array_and_exports_to_numpy() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    assert!(Command::new(crate::util::bin())
        .args([
            os("gen"),
            input.as_os_str(),
            os("--count"),
            os("5"),
            os("--size"),
            os("50x30"),
            os("--format"),
            os("png")
        ])
        .status()
        .unwrap()
        .success());
    let name = format!("np{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    // 21 x 13 x 3 = 819 bytes a slot: not a multiple of 64, so slots are padded and the array
    // view is strided.
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--resize"),
        os("21x13"),
        os("--quiet"),
    ]);
    let file = tmp.path().join("ds.npy");
    ok(&[os("export"), os(&name), file.as_os_str()]);
    let checked = python(&format!(
        r#"
import json, numpy as np, shmpipe
ds = shmpipe.attach("{name}")
loaded = np.load(r"{file}")
out = {{"shape": list(ds.array.shape), "dtype": str(loaded.dtype), "loaded_shape": list(loaded.shape),
        "equal": bool(np.array_equal(ds.array, loaded)),
        "each": all(np.array_equal(ds.images[i], loaded[i]) for i in range(len(ds.images))),
        "mean": float(loaded.mean())}}
ds.close()
print(json.dumps(out))
"#,
        file = file.display()
    ));
    assert_eq!(checked["shape"], serde_json::json!([5, 13, 21, 3]));
    assert_eq!(checked["loaded_shape"], checked["shape"]);
    assert_eq!(checked["dtype"], "uint8");
    assert_eq!(checked["equal"], true);
    assert_eq!(checked["each"], true);
    assert!(
        checked["mean"].as_f64().unwrap() > 10.0,
        "real pixels, not zeros"
    );
    // The kept block is listed as kept, and clean leaves it alone.
    let ls = ok(&[os("ls"), os("--json")]);
    let listed: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == format!("shmpipe-{name}"))
        .cloned()
        .unwrap();
    assert_eq!(entry["status"], "kept");
    ok(&[os("clean")]);
    assert!(block_exists(&name), "clean never removes a kept dataset");
}

/// A run's own working block is not a dataset: its slots are reserved only as workers claim
/// them, and it goes when the run ends. Python refuses to attach to it, naming the way to keep one.
#[test]
fn python_refuses_a_runs_working_block() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = Command::new(crate::util::bin())
        .args(["run", "--ops", "invert", "-j", "1", "--quiet", "-o"])
        .arg(tmp.path().join("out"))
        .arg(crate::util::assets().join("nested"))
        .env(shmpipe_worker::hooks::STALL_ENV, "camera.png:2000")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The name exists from shm_open on; wait until the block is sized, then give its creator a
    // moment to write the header (the worker holds camera.png for 2 s meanwhile).
    let block = loop {
        let sized = crate::util::blocks_of(run.id())
            .into_iter()
            .find(|b| std::fs::metadata(Path::new("/dev/shm").join(b)).is_ok_and(|m| m.len() > 0));
        if let Some(b) = sized {
            std::thread::sleep(std::time::Duration::from_millis(200));
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run made its block"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let said = python(&format!(
        r#"
import json, shmpipe
try:
    shmpipe.attach("{block}")
    print(json.dumps({{"refused": False}}))
except shmpipe.BlockError as e:
    print(json.dumps({{"refused": True, "why": str(e)}}))
"#
    ));
    assert!(run.wait().unwrap().success());
    assert_eq!(said["refused"], true, "{said}");
    assert!(
        said["why"].as_str().unwrap().contains("not a dataset"),
        "{said}"
    );
    crate::util::assert_no_leaks(run.id());
}

/// Python refuses what `save` refuses: a dataset whose apply was interrupted (until `repair`),
/// and one holding an image that failed at load (unless `partial=True`, which leaves it out and
/// lists it); it
/// takes the lock shared, so an `apply` refuses to change the pixels under an attached reader.
#[test]
fn python_refuses_damaged_datasets_and_failed_images_and_holds_off_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..3u32 {
        image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([(x + i) as u8, y as u8, 7]))
            .save(input.join(format!("p{i}.png")))
            .unwrap();
    }
    // A PNG whose data is cut short: it fails at load.
    let good = std::fs::read(input.join("p0.png")).unwrap();
    std::fs::write(input.join("z_cut.png"), &good[..good.len() / 2]).unwrap();
    let name = format!("pyd{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    let loaded = Command::new(crate::util::bin())
        .args([
            os("load"),
            input.as_os_str(),
            os("--name"),
            os(&name),
            os("-q"),
        ])
        .output()
        .unwrap();
    assert_eq!(loaded.status.code(), Some(1), "the cut PNG fails at load");
    let attach = |partial: &str| {
        python(&format!(
            r#"
import json, shmpipe
try:
    ds = shmpipe.attach("{name}", partial={partial})
    print(json.dumps({{"refused": False, "failed": list(ds.failed), "count": len(ds.images)}}))
    ds.close()
except shmpipe.BlockError as e:
    print(json.dumps({{"refused": True, "why": str(e)}}))
"#
        ))
    };
    let said = attach("False");
    assert_eq!(said["refused"], true, "{said}");
    assert!(
        said["why"].as_str().unwrap().contains("z_cut.png"),
        "{said}"
    );
    let said = attach("True");
    assert_eq!(said["refused"], false, "{said}");
    // Keyed by path: with partial=True the handle's indices cover only the images that loaded.
    assert_eq!(said["failed"], serde_json::json!(["z_cut.png"]));
    assert_eq!(said["count"], 3, "{said}");

    // While Python holds the dataset, apply refuses rather than change pixels under it.
    let mut reader = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import shmpipe, time\nds = shmpipe.attach('{name}', partial=True)\nprint('attached', flush=True)\ntime.sleep(3)\nds.close()"
        ))
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(reader.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "attached");
    let applied = Command::new(crate::util::bin())
        .args(["apply", &name, "--ops", "invert"])
        .output()
        .unwrap();
    assert_eq!(applied.status.code(), Some(2));
    let said = crate::util::stderr(&applied);
    assert!(
        said.contains("busy: 1 process(es) attached to read it"),
        "{said}"
    );
    assert!(reader.wait().unwrap().success());

    // An apply killed mid-image leaves the dataset damaged: Python refuses it until repair.
    let child = Command::new(crate::util::bin())
        .args(["apply", &name, "--ops", "blur:2", "-j", "1"])
        .env(shmpipe_worker::hooks::STALL_ENV, "p1.png:30000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while crate::util::workers_of(pid).is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(400));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let mut child = child;
    child.wait().unwrap();
    crate::util::assert_no_leaks(pid);
    let said = attach("True");
    assert_eq!(said["refused"], true, "{said}");
    assert!(
        said["why"].as_str().unwrap().contains("shmpipe repair"),
        "{said}"
    );
    ok(&[os("repair"), os(&name), os("-q")]);
    assert_eq!(attach("True")["refused"], false);
}

/// A file with one of our names that another user owns is not attached to, whatever it holds.
/// (In a folder of the test's own: `clean` exits 1 on meeting a file it may not remove, and a
/// test elsewhere may be running `clean` on /dev/shm.)
#[test]
fn python_refuses_a_block_file_owned_by_another_user() {
    let _backing = crate::util::own_backing();
    let name = format!("pyforeign{}", std::process::id());
    let path = crate::util::blocks_dir().join(format!("shmpipe-{name}"));
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    struct Gone<'a>(&'a Path);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _gone = Gone(&path);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let said = python(&format!(
        r#"
import json, shmpipe
try:
    shmpipe.attach("{name}", backing="{backing}")
    print(json.dumps({{"refused": False}}))
except shmpipe.BlockError as e:
    print(json.dumps({{"refused": True, "why": str(e)}}))
"#,
        backing = crate::util::blocks_dir().display()
    ));
    assert_eq!(said["refused"], true, "{said}");
    assert!(said["why"].as_str().unwrap().contains("not ours"), "{said}");
}

/// A crafted block (a real dataset whose only record is patched): its slot offset is
/// 2**64 - pixels_offset - 64, so offset + length wraps in uint64 to less than the pixels'
/// length. Attach used to check that sum in NumPy uint64, let the record pass, and
/// `ds.array.sum()` read past the mapping's end (rc 139); a writable handle would have written
/// there. Now attach refuses it, read-only or writable, naming the image and the reason, with
/// no crash, and a writable attempt leaves the block as it was (still ready, no writer counted).
#[test]
fn python_refuses_a_record_whose_slot_offset_wraps_past_2_pow_64() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    ok(&[
        os("gen"),
        input.as_os_str(),
        os("--count"),
        os("1"),
        os("--size"),
        os("256x256"),
        os("--format"),
        os("png"),
    ]);
    let name = format!("pywrap{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("-q"),
    ]);
    // Also removed when `rm` refuses the damaged block.
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let block = Path::new("/dev/shm").join(format!("shmpipe-{name}"));
    let _gone = Gone(block.clone());
    let patched = python(&format!(
        r#"
import json, struct
with open({block:?}, "r+b") as f:
    head = f.read(512)
    table, pixels, pixels_len = (struct.unpack_from("<Q", head, at)[0] for at in (48, 96, 104))
    f.seek(table + 8)
    slot_len = struct.unpack("<Q", f.read(8))[0]
    offset = 2**64 - pixels - 64
    f.seek(table)
    f.write(struct.pack("<Q", offset))
print(json.dumps({{"offset": offset, "wrapped": (offset + slot_len) % 2**64, "pixels_len": pixels_len, "state": struct.unpack_from("<I", head, 296)[0], "writers": struct.unpack_from("<Q", head, 248)[0]}}))
"#,
        block = block.display().to_string()
    ));
    let wrapped = patched["wrapped"].as_u64().unwrap();
    assert!(
        wrapped <= patched["pixels_len"].as_u64().unwrap(),
        "the sum wraps into bounds: {patched}"
    );
    for writable in ["False", "True"] {
        // A process of its own: a crash is an exit status, not this test's.
        let module_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                r#"
import json, struct, numpy as np, shmpipe
try:
    ds = shmpipe.attach("{name}", writable={writable})
    said = {{"refused": False, "sum": int(ds.array.sum(dtype=np.uint64))}}
    if ds.writable:
        ds.array[:] = 1
    ds.close()
except shmpipe.BlockError as e:
    said = {{"refused": True, "why": str(e)}}
with open({block:?}, "rb") as f:
    head = f.read(512)
said["state"] = struct.unpack_from("<I", head, 296)[0]
said["writers"] = struct.unpack_from("<Q", head, 248)[0]
print(json.dumps(said))
"#,
                block = block.display().to_string()
            ))
            .env("PYTHONPATH", &module_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "writable={writable}: attach crashed ({}): {}",
            out.status,
            crate::util::stderr(&out)
        );
        let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(said["refused"], true, "writable={writable}: {said}");
        let why = said["why"].as_str().unwrap();
        assert!(
            why.contains(&format!("shmpipe-{name}"))
                && why.contains("image 0")
                && why.contains("out of bounds")
                && why.contains(&format!("slot offset {}", patched["offset"])),
            "writable={writable}: {why}"
        );
        assert_eq!(
            said["state"], patched["state"],
            "writable={writable}: {said}"
        );
        assert_eq!(
            said["writers"], patched["writers"],
            "writable={writable}: {said}"
        );
    }
}

/// The arithmetic of attach's record check against Python integers, on the values where uint64
/// arithmetic wraps: offsets and lengths near 2**64, shapes whose height * width * channels
/// wraps to the slot's length, sources past the strings, misaligned and overlapping slots.
/// Every verdict is the one exact integer arithmetic gives.
#[test]
fn the_record_check_agrees_with_python_integers_where_uint64_wraps() {
    let said = python(
        r#"
import itertools, json
import numpy as np
from shmpipe._layout import _bad_records

PLEN, SLEN, CH = 1 << 20, 4096, 3
def exact(off, ln, h, w, c, so, sl):
    return not (off + ln <= PLEN and off % 64 == 0 and so + sl <= SLEN and c == CH and h * w * c == ln)

big = [0, 64, PLEN - 64, PLEN, PLEN + 64, 2**63, 2**64 - 64, 2**64 - 1, 2**64 - PLEN]
wrap = ((2**32 - 1) ** 2 * 3) % 2**64
shapes = [(16, 16, 3), (2**32 - 1, 2**32 - 1, 3), (0, 5, 3), (16, 16, 4), (16, 16, 0)]
lens = big + [768, wrap]
sources = [(0, 10), (SLEN, 0), (SLEN, 1), (2**64 - 1, 2), (2, 2**64 - 1)]
checked = disagree = 0
for off, ln, (h, w, c), (so, sl) in itertools.product(big, lens, shapes, sources):
    u64 = lambda v: np.array([v], np.uint64)
    u32 = lambda v: np.array([v], np.uint32)
    with np.errstate(all="raise"):
        got = bool(_bad_records(u64(off), u64(ln), u32(h), u32(w), u32(c), u64(so), u64(sl), PLEN, SLEN, CH)[0])
    checked += 1
    disagree += got != exact(off, ln, h, w, c, so, sl)
# Two slots: in order, overlapping, out of order.
pairs = {}
for name, offs in {"ordered": [0, 768], "overlapping": [0, 704], "reversed": [768, 0]}.items():
    n = len(offs)
    bad = _bad_records(np.array(offs, np.uint64), np.full(n, 768, np.uint64), np.full(n, 16, np.uint32),
                       np.full(n, 16, np.uint32), np.full(n, 3, np.uint32), np.zeros(n, np.uint64),
                       np.zeros(n, np.uint64), PLEN, SLEN, CH)
    pairs[name] = bad.tolist()
print(json.dumps({"checked": checked, "disagree": disagree, "pairs": pairs}))
"#,
    );
    assert!(said["checked"].as_u64().unwrap() > 2000, "{said}");
    assert_eq!(said["disagree"], 0, "{said}");
    assert_eq!(
        said["pairs"],
        serde_json::json!({"ordered": [false, false], "overlapping": [false, true], "reversed": [false, true]}),
        "{said}"
    );
}

/// A dataset of one 40x30 picture, loaded under `PREFIX` and this process's pid; removed when the
/// guard goes.
fn one_image_dataset(prefix: &str) -> (String, Dataset) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 9]))
        .save(input.join("a.png"))
        .unwrap();
    let name = format!("{prefix}{}", std::process::id());
    let guard = Dataset(name.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("-q"),
    ]);
    (name, guard)
}

/// `rm` of a dataset a Python handle holds says who holds it, as the kernel lists its lock (the
/// reader's pid and command), instead of "became live"; once the handle is closed, `rm` works.
#[test]
fn rm_names_the_python_process_that_holds_a_dataset() {
    use std::io::{BufRead, Write};
    let (name, _cleanup) = one_image_dataset("held");
    let module_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let mut reader = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import os, sys, shmpipe\nds = shmpipe.attach({name:?})\nprint(os.getpid(), flush=True)\nsys.stdin.readline()\nds.close()\n"
        ))
        .env("PYTHONPATH", module_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(reader.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line.trim().parse().expect("the reader printed its pid");
    let out = Command::new(crate::util::bin())
        .args(["rm", name.as_str()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("pid {pid} (python")) && said.contains("reading"),
        "{said}"
    );
    assert!(!said.contains("became live"), "{said}");
    assert!(block_exists(&name));
    reader.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(reader.wait().unwrap().success());
    ok(&[os("rm"), os(&name)]);
    assert!(!block_exists(&name));
}

/// Issue 27: `rm` was refused while any reader (a notebook) held a dataset, with no way to force
/// it. `rm --force` takes the name from readers, who keep reading what they mapped; it is still
/// refused while a writer (a writable handle) holds the dataset, and plain `rm` says `--force`
/// exists only when readers alone hold it.
#[test]
fn rm_force_takes_the_name_from_readers_who_keep_their_pixels_but_never_from_a_writer() {
    use std::io::{BufRead, Write};
    let (name, _cleanup) = one_image_dataset("forced");
    let module_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    // A handle that prints its pixels' sum, waits, then sums them again after the name is gone.
    let hold = |writable: bool| {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import sys, shmpipe\nds = shmpipe.attach({name:?}, writable={})\nprint(int(ds.images[0].sum()), flush=True)\nsys.stdin.readline()\nprint(int(ds.images[0].sum()), flush=True)\nds.close()\n",
                if writable { "True" } else { "False" }
            ))
            .env("PYTHONPATH", &module_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first: u64 = lines.next().unwrap().unwrap().trim().parse().unwrap();
        (child, lines, first)
    };

    let (mut writer, mut lines, _) = hold(true);
    let refused = crate::util::shmpipe(&["rm", "--force", name.as_str()]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        crate::util::stderr(&refused)
    );
    assert!(!crate::util::stderr(&refused).contains("--force"));
    assert!(
        block_exists(&name),
        "rm --force never takes a writer's dataset"
    );
    writer.stdin.take().unwrap().write_all(b"\n").unwrap();
    lines.next().unwrap().unwrap();
    assert!(writer.wait().unwrap().success());

    let (mut reader, mut lines, before) = hold(false);
    let plain = crate::util::shmpipe(&["rm", name.as_str()]);
    assert_eq!(plain.status.code(), Some(2));
    assert!(
        crate::util::stderr(&plain).contains(&format!("shmpipe rm --force shmpipe-{name}")),
        "{}",
        crate::util::stderr(&plain)
    );
    let forced = crate::util::shmpipe(&["rm", "--force", name.as_str()]);
    assert_eq!(
        forced.status.code(),
        Some(0),
        "{}",
        crate::util::stderr(&forced)
    );
    assert!(!block_exists(&name), "the name is gone");
    reader.stdin.take().unwrap().write_all(b"\n").unwrap();
    let after: u64 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    assert!(reader.wait().unwrap().success());
    assert_eq!(after, before, "the reader kept its pixels");
    assert!(before > 0);
}

/// The Python package's mirror of the layout (python/shmpipe/_layout.py) is the Rust one: every
/// header field it reads at the offset and of the size Rust gives it, the image record's fields
/// likewise, and the constants and states it compares with. A layout changed on one side only
/// fails here before any dataset is misread.
#[test]
fn the_python_layout_mirror_is_the_rust_layout() {
    use shmpipe_block::{
        DatasetState, Header, ImageRecord, ImageStatus, StrRef, FLAG_COPY, FLAG_KEPT,
        LAYOUT_VERSION, MAGIC, MESSAGE_LEN,
    };
    use std::mem::{offset_of, size_of};

    /// The size of a field, from an accessor: no value needed.
    fn size<S, T>(_: fn(&S) -> &T) -> usize {
        size_of::<T>()
    }
    let said = python(
        r#"
import json, struct
from shmpipe import _layout as L
print(json.dumps({
    "header": {k: [o, struct.calcsize(f)] for k, (o, f) in L._HEADER.items()},
    "record": {k: [L._RECORD.fields[k][1], L._RECORD.fields[k][0].itemsize] for k in L._RECORD.names},
    "record_size": L._RECORD.itemsize,
    "consts": [L.LAYOUT_VERSION, list(L.MAGIC), L.HEADER_SIZE, L.IMAGE_RECORD_SIZE, L._ALIGN,
               L._MESSAGE_LEN, L._LABEL_AT, L.FLAG_COPY, L.FLAG_KEPT, L._READY, L._PYTHON_WRITING,
               L._DONE, sorted(L._NOT_READY), list(L.FORMATS)],
}))
"#,
    );
    let input_root = offset_of!(Header, input_root);
    let class_names = offset_of!(Header, class_names);
    let strref = size_of::<u64>();
    let header: Vec<(&str, usize, usize)> = vec![
        (
            "magic",
            offset_of!(Header, magic),
            size(|h: &Header| &h.magic),
        ),
        (
            "layout_version",
            offset_of!(Header, layout_version),
            size(|h: &Header| &h.layout_version),
        ),
        (
            "header_size",
            offset_of!(Header, header_size),
            size(|h: &Header| &h.header_size),
        ),
        (
            "total_size",
            offset_of!(Header, total_size),
            size(|h: &Header| &h.total_size),
        ),
        (
            "image_count",
            offset_of!(Header, image_count),
            size(|h: &Header| &h.image_count),
        ),
        (
            "channels",
            offset_of!(Header, channels),
            size(|h: &Header| &h.channels),
        ),
        (
            "image_table_offset",
            offset_of!(Header, image_table_offset),
            size(|h: &Header| &h.image_table_offset),
        ),
        (
            "image_record_size",
            offset_of!(Header, image_record_size),
            size(|h: &Header| &h.image_record_size),
        ),
        (
            "strings_offset",
            offset_of!(Header, strings_offset),
            size(|h: &Header| &h.strings_offset),
        ),
        (
            "strings_len",
            offset_of!(Header, strings_len),
            size(|h: &Header| &h.strings_len),
        ),
        (
            "pixels_offset",
            offset_of!(Header, pixels_offset),
            size(|h: &Header| &h.pixels_offset),
        ),
        (
            "pixels_len",
            offset_of!(Header, pixels_len),
            size(|h: &Header| &h.pixels_len),
        ),
        (
            "input_root_offset",
            input_root + offset_of!(StrRef, offset),
            strref,
        ),
        (
            "input_root_len",
            input_root + offset_of!(StrRef, len),
            strref,
        ),
        (
            "flags",
            offset_of!(Header, flags),
            size(|h: &Header| &h.flags),
        ),
        (
            "created_unix_ns",
            offset_of!(Header, created_unix_ns),
            size(|h: &Header| &h.created_unix_ns),
        ),
        (
            "python_writers",
            offset_of!(Header, python_writers),
            size(|h: &Header| &h.python_writers),
        ),
        (
            "dataset_state",
            offset_of!(Header, dataset_state),
            size(|h: &Header| &h.dataset_state),
        ),
        (
            "history_count",
            offset_of!(Header, history_count),
            size(|h: &Header| &h.history_count),
        ),
        (
            "label_kind",
            offset_of!(Header, label_kind),
            size(|h: &Header| &h.label_kind),
        ),
        (
            "class_count",
            offset_of!(Header, class_count),
            size(|h: &Header| &h.class_count),
        ),
        (
            "class_names_offset",
            class_names + offset_of!(StrRef, offset),
            strref,
        ),
        (
            "class_names_len",
            class_names + offset_of!(StrRef, len),
            strref,
        ),
    ];
    let want: serde_json::Map<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, o, s)| (k.to_string(), serde_json::json!([o, s])))
        .collect();
    assert_eq!(said["header"], serde_json::Value::Object(want));

    let source = offset_of!(ImageRecord, source);
    // `message` is private to the block crate: it lies between `source_mtime_ns` and
    // `original_width`, MESSAGE_LEN bytes.
    let message = offset_of!(ImageRecord, source_mtime_ns) + 8;
    assert_eq!(
        message + MESSAGE_LEN,
        offset_of!(ImageRecord, original_width)
    );
    let r = |o: usize, s: usize| serde_json::json!([o, s]);
    let record = serde_json::json!({
        "slot_offset": r(offset_of!(ImageRecord, slot_offset), 8),
        "slot_len": r(offset_of!(ImageRecord, slot_len), 8),
        "height": r(offset_of!(ImageRecord, height), 4),
        "width": r(offset_of!(ImageRecord, width), 4),
        "channels": r(offset_of!(ImageRecord, channels), 4),
        "format": r(offset_of!(ImageRecord, format), 4),
        "source_offset": r(source + offset_of!(StrRef, offset), 8),
        "source_len": r(source + offset_of!(StrRef, len), 8),
        "status": r(offset_of!(ImageRecord, status), size(|i: &ImageRecord| &i.status)),
        "message_len": r(
            offset_of!(ImageRecord, message_len),
            size(|i: &ImageRecord| &i.message_len)
        ),
        "message": r(message, MESSAGE_LEN),
        "original_width": r(offset_of!(ImageRecord, original_width), 4),
        "original_height": r(offset_of!(ImageRecord, original_height), 4),
        "label": r(offset_of!(ImageRecord, label), size(|i: &ImageRecord| &i.label)),
    });
    assert_eq!(said["record"], record);
    assert_eq!(said["record_size"], size_of::<ImageRecord>());

    let formats: Vec<String> = shmpipe_worker::codec::FORMATS
        .iter()
        .map(|f| format!("{f:?}").to_lowercase())
        .collect();
    assert_eq!(
        said["consts"],
        serde_json::json!([
            LAYOUT_VERSION,
            MAGIC.to_vec(),
            size_of::<Header>(),
            size_of::<ImageRecord>(),
            shmpipe_block::ALIGN,
            MESSAGE_LEN,
            offset_of!(ImageRecord, label),
            FLAG_COPY,
            FLAG_KEPT,
            DatasetState::Ready as u32,
            DatasetState::PythonWriting as u32,
            ImageStatus::Done as u32,
            [
                DatasetState::None as u32,
                DatasetState::Loading as u32,
                DatasetState::Applying as u32,
                DatasetState::Repairing as u32,
                DatasetState::PythonWriting as u32
            ],
            formats,
        ])
    );
}
