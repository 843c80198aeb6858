//! The Python package as a data loader uses it, with real processes and real NumPy: a handle and
//! a `Dataset` handed to 8 processes under fork, spawn and forkserver (pickled by name, never by
//! value, never unlinked), views that outlive their handle, the block's lock held by handles
//! (shared, or exclusive when writable) against shmpipe's writers and readers, and a dataset that
//! is being loaded or whose load was killed.
//!
//! Runs under every interpreter named in `SHMPIPE_PYTHONS` (space separated; `python3` when
//! unset), each with NumPy. `.ci/run` names every Python it finds under pyenv.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, os, Dataset};

fn pythons() -> Vec<String> {
    std::env::var("SHMPIPE_PYTHONS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map_or_else(
            || vec!["python3".to_string()],
            |s| s.split_whitespace().map(String::from).collect(),
        )
}

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("worker/python")
}

/// Runs `script` under `python` and returns the JSON it printed last.
fn python(python: &str, script: &str) -> serde_json::Value {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .env("PYTHONPATH", package_dir())
        .output()
        .unwrap_or_else(|e| panic!("{python} runs: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python} failed ({}): {stderr}",
        out.status
    );
    assert!(
        !stderr.contains("leaked shared_memory") && !stderr.contains("resource_tracker"),
        "the resource tracker got involved: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{python} printed JSON: {stdout}"))
}

fn block_exists(name: &str) -> bool {
    Path::new("/dev/shm")
        .join(format!("shmpipe-{name}"))
        .exists()
}

/// `gen` a folder and `load` it as `name`.
fn load(dir: &Path, name: &str, count: u32, size: &str) {
    ok(&[
        os("gen"),
        dir.as_os_str(),
        os("--count"),
        os(&count.to_string()),
        os("--size"),
        os(size),
        os("--format"),
        os("jpeg"),
    ]);
    ok(&[
        os("load"),
        dir.as_os_str(),
        os("--name"),
        os(name),
        os("-j"),
        os("2"),
        os("--quiet"),
    ]);
}

/// The finding this package was built for: handing a dataset to worker processes used to
/// pickle every pixel into each of them, and the receiver's resource tracker unlinked the block
/// when it exited. Now each of 8 processes, under each start method, attaches by name: the
/// pickle is a few hundred bytes, each child's memory apart from the block stays under 50 MiB
/// while it reads every pixel of a 69 MiB dataset, and the block is there afterwards.
#[test]
fn handles_and_datasets_pickle_by_name_under_fork_spawn_and_forkserver() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("pyk{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    // 16 x 1200 x 1200 x 3 = 69 MB: a copy in a child would be over the 50 MiB limit by itself.
    load(&tmp.path().join("in"), &name, 16, "1200x1200");
    let script = format!(
        r#"
import json, multiprocessing as mp, pickle, sys
import numpy as np, shmpipe

BLOCK = "/dev/shm/shmpipe-{name}"

def private_mib_apart_from_block():
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                inside = len(head) >= 6 and head[5] == BLOCK
            elif head and head[0] in ("Private_Clean:", "Private_Dirty:") and not inside:
                total += int(head[1])
    return total / 1024

def child(obj):
    if isinstance(obj, shmpipe.Dataset):
        total = sum(int(obj[i][0].sum(dtype=np.uint64)) for i in range(len(obj)))
        label = obj[0][1]
        writeable = obj[0][0].flags.writeable
    else:
        total = int(obj.array.sum(dtype=np.uint64))
        label = None
        writeable = obj.images[0].flags.writeable
    return total, private_mib_apart_from_block(), writeable, label

if __name__ == "__main__":
    handle = shmpipe.attach("{name}")
    dataset = shmpipe.Dataset("{name}")
    expected = int(handle.array.sum(dtype=np.uint64))
    out = {{"pickle_bytes": [len(pickle.dumps(handle)), len(pickle.dumps(dataset))],
           "expected": expected, "python": sys.version.split()[0]}}
    for method in ("fork", "spawn", "forkserver"):
        with mp.get_context(method).Pool(8) as pool:
            out[method] = pool.map(child, [handle] * 8 + [dataset] * 8, chunksize=1)
    handle.close()
    dataset.close()
    print(json.dumps(out))
"#
    );
    for py in pythons() {
        let file = tmp.path().join("pickles.py");
        std::fs::write(&file, &script).unwrap();
        // A file, not -c: spawn and forkserver children import the main module.
        let out = Command::new(&py)
            .arg(&file)
            .env("PYTHONPATH", package_dir())
            .output()
            .unwrap_or_else(|e| panic!("{py} runs: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{py}: {stderr}");
        assert!(
            !stderr.contains("leaked") && !stderr.contains("resource_tracker"),
            "{py}: the resource tracker got involved: {stderr}"
        );
        let said: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{py}: {stderr}"));
        eprintln!(
            "{py} ({}): pickles {}",
            said["python"], said["pickle_bytes"]
        );
        for bytes in said["pickle_bytes"].as_array().unwrap() {
            assert!(bytes.as_u64().unwrap() < 1000, "{py}: pickled by name");
        }
        let expected = said["expected"].as_u64().unwrap();
        assert!(expected > 0);
        for method in ["fork", "spawn", "forkserver"] {
            let results = said[method].as_array().unwrap();
            assert_eq!(results.len(), 16);
            for (i, r) in results.iter().enumerate() {
                assert_eq!(r[0], expected, "{py} {method} #{i}: every pixel seen");
                let private = r[1].as_f64().unwrap();
                eprintln!("{py} {method} #{i}: {private:.1} MiB private");
                assert!(
                    private < 50.0,
                    "{py} {method} #{i}: {private:.1} MiB private besides the block"
                );
                assert_eq!(r[2], false, "{py} {method}: views are read-only");
            }
        }
        assert!(
            block_exists(&name),
            "{py}: the block survives every child and the parent"
        );
    }
    let ls: serde_json::Value = serde_json::from_str(&ok(&[os("ls"), os("--json")])).unwrap();
    let entry = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == format!("shmpipe-{name}"))
        .cloned()
        .expect("ls lists the dataset");
    assert_eq!(entry["status"], "kept", "{entry}");
}

/// Views used after their handle is gone, closed, or left by a `with` block: each used to be a
/// segmentation fault. Each now reads the right pixels; the handle itself refuses with a clear
/// error once closed; the lock goes with the last view.
#[test]
fn views_outlive_their_handle_without_crashing() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("pyv{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    load(&tmp.path().join("in"), &name, 3, "64x48");
    for py in pythons() {
        let said = python(
            &py,
            &format!(
                r#"
import gc, json
import numpy as np, shmpipe

N = "{name}"
# A handle dropped without close() lets go of the lock at once, garbage collector or not.
gc.disable()
dropped = shmpipe.attach(N)
dropped.images[0], dropped.paths[0]
del dropped
shmpipe.attach(N, writable=True).close()
gc.enable()

reference = shmpipe.attach(N)
means = [float(np.array(reference.images[i]).mean()) for i in range(3)]
reference.close()
del reference
gc.collect()

x = shmpipe.attach(N).images[1]       # the handle is collected at once
gc.collect()
after_collect = float(x.mean())

with shmpipe.attach(N) as ds:
    first = ds.array[0]
    third = ds.images[2]
gc.collect()
after_with = [float(first.mean()), float(third.mean())]

ds = shmpipe.attach(N)
view = ds.images[0]
ds.close()
errors = []
for use in (lambda: ds.images[0], lambda: ds.paths[0]):
    try:
        use()
    except ValueError as e:
        errors.append(str(e))
del ds
gc.collect()
after_close = float(view.mean())

# The views still hold the block's lock shared: a writer is refused...
try:
    shmpipe.attach(N, writable=True)
    held = False
except shmpipe.BlockError as e:
    held = "busy" in str(e)
# ...until the last view is gone.
del x, first, third, view
gc.collect()
writer = shmpipe.attach(N, writable=True)
writer.close()
print(json.dumps({{"means": means, "after_collect": after_collect, "after_with": after_with,
                  "after_close": after_close, "errors": errors, "held": held}}))
"#
            ),
        );
        let means = &said["means"];
        assert!(means[0].as_f64().unwrap() > 1.0, "real pixels");
        assert_eq!(said["after_collect"], means[1], "{py}");
        assert_eq!(said["after_with"][0], means[0], "{py}");
        assert_eq!(said["after_with"][1], means[2], "{py}");
        assert_eq!(said["after_close"], means[0], "{py}");
        let errors = said["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 2, "{py}: a closed handle refuses: {said}");
        assert!(errors[0].as_str().unwrap().contains("closed"), "{said}");
        assert_eq!(said["held"], true, "{py}: live views hold the lock");
    }
}

/// A Python process holding a handle until its stdin closes.
struct Holder(Child);

impl Holder {
    fn start(name: &str, writable: bool) -> Holder {
        let mut child = Command::new(&pythons()[0])
            .arg("-c")
            .arg(format!(
                "import sys, shmpipe\nds = shmpipe.attach('{name}', writable={})\nv = ds.images[0]\nprint('attached', flush=True)\nsys.stdin.read()\n",
                if writable { "True" } else { "False" }
            ))
            .env("PYTHONPATH", package_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "attached");
        Holder(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// What `attach` says, or "" when it attached.
fn refusal(name: &str, writable: bool) -> String {
    let said = python(
        &pythons()[0],
        &format!(
            r#"
import json, shmpipe
try:
    shmpipe.attach("{name}", writable={w}).close()
    print(json.dumps(""))
except shmpipe.BlockError as e:
    print(json.dumps(str(e)))
"#,
            w = if writable { "True" } else { "False" }
        ),
    );
    said.as_str().unwrap().to_string()
}

/// `shmpipe ARGS`: its exit code and stderr.
fn shmpipe(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    (out.status.code(), common::stderr(&out))
}

/// A read-only handle shares the lock with `save` and other readers, and keeps `apply` and a
/// writable handle off; a writable handle keeps everyone off; a running `apply` keeps both
/// kinds of handle off. Each refusal says who holds the block.
#[test]
fn handles_hold_the_lock_against_shmpipe_writers_and_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("pyl{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    load(&tmp.path().join("in"), &name, 4, "64x48");
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();

    {
        let reader = Holder::start(&name, false);
        let (code, said) = shmpipe(&["apply", &name, "--ops", "invert"]);
        assert_eq!(code, Some(2), "{said}");
        assert!(
            said.contains("busy: 1 process(es) attached to read it")
                && said.contains(&reader.pid().to_string()),
            "{said}"
        );
        let (code, said) = shmpipe(&["save", &name, "-o", out]);
        assert_eq!(code, Some(0), "readers share the block: {said}");
        assert_eq!(refusal(&name, false), "", "a second reader attaches");
        let said = refusal(&name, true);
        assert!(said.contains("busy: 1 process(es) attached"), "{said}");
    }
    {
        let writer = Holder::start(&name, true);
        for args in [
            vec!["apply", &name, "--ops", "invert"],
            vec!["save", &name, "-o", out],
        ] {
            let (code, said) = shmpipe(&args);
            assert_eq!(code, Some(2), "{args:?}: {said}");
            assert!(
                said.contains("a writer holds it")
                    && said.contains(&format!("pid {}", writer.pid())),
                "{args:?}: {said}"
            );
        }
        for writable in [false, true] {
            let said = refusal(&name, writable);
            assert!(said.contains("busy: a writer holds it"), "{said}");
        }
    }
    // A handle's process killed (SIGKILL or SIGTERM) while attached, writable or not, takes
    // its lock with it: nothing is left holding the dataset.
    for (writable, signal) in [
        (true, rustix::process::Signal::KILL),
        (false, rustix::process::Signal::KILL),
        (true, rustix::process::Signal::TERM),
    ] {
        let holder = Holder::start(&name, writable);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(holder.pid() as i32).unwrap(),
            signal,
        )
        .unwrap();
        drop(holder);
        assert_eq!(
            refusal(&name, true),
            "",
            "a killed handle (writable: {writable}, {signal:?}) leaves no lock"
        );
    }
    // Nothing holds it now: apply runs; while it runs, neither kind of handle attaches.
    let (code, said) = shmpipe(&["apply", &name, "--ops", "invert", "-q"]);
    assert_eq!(code, Some(0), "{said}");
    let mut apply = Command::new(common::bin())
        .args(["apply", &name, "--ops", "invert", "-j", "1", "-q"])
        .env(shmpipe_worker::worker::STALL_ENV, "000001.jpg:5")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::workers_of(apply.id()).is_empty() {
        assert!(Instant::now() < deadline, "apply started its worker");
        std::thread::sleep(Duration::from_millis(10));
    }
    for writable in [false, true] {
        let said = refusal(&name, writable);
        assert!(said.contains("busy: a writer holds it"), "{said}");
    }
    assert!(apply.wait().unwrap().success());
    common::assert_no_leaks(apply.id());
    assert_eq!(refusal(&name, false), "");
}

/// A dataset being loaded is not attached (its writer holds it), nor one whose load was killed
/// (its state says incomplete), whichever way the handle asks.
#[test]
fn a_dataset_being_loaded_or_whose_load_was_killed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    ok(&[
        os("gen"),
        input.as_os_str(),
        os("--count"),
        os("6"),
        os("--size"),
        os("64x48"),
        os("--format"),
        os("png"),
    ]);
    let name = format!("pyld{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    let mut load = Command::new(common::bin())
        .args(["load", "--name", &name, "-j", "1", "-q"])
        .arg(&input)
        .env(shmpipe_worker::worker::STALL_ENV, "000003.png:60")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !block_exists(&name) || common::workers_of(load.id()).is_empty() {
        assert!(Instant::now() < deadline, "load published its block");
        std::thread::sleep(Duration::from_millis(10));
    }
    for writable in [false, true] {
        let said = refusal(&name, writable);
        assert!(said.contains("busy: a writer holds it"), "{said}");
    }
    let pid = load.id();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    load.wait().unwrap();
    common::assert_no_leaks(pid);
    for writable in [false, true] {
        let said = refusal(&name, writable);
        assert!(said.contains("is incomplete"), "{said}");
        assert!(said.contains(&format!("shmpipe repair {name}")), "{said}");
    }
    let _ = std::io::stderr().flush();
}

/// `load --labels folder`: each image's class is the index of its top-level folder in sorted
/// order (ImageFolder's rule), the class names are in the block, `ls` counts them, and every
/// image records its source's own size and format, also when resized. An image lying directly
/// in the folder is refused with its name, and nothing is left behind.
#[test]
fn labels_of_a_two_class_folder_tree_and_original_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    // Sorted: cat/a.png, cat/deep/b.jpg, dog/c.png; "dog" sorts after "cat" whatever the walk.
    for (rel, (w, h)) in [
        ("dog/c.png", (30u32, 20u32)),
        ("cat/a.png", (40, 10)),
        ("cat/deep/b.jpg", (16, 48)),
    ] {
        let path = input.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 9]))
            .save(&path)
            .unwrap();
    }
    let name = format!("pylab{}", std::process::id());
    let _cleanup = Dataset(name.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--labels"),
        os("folder"),
        os("--resize"),
        os("8x8"),
        os("-q"),
    ]);
    let said = python(
        &pythons()[0],
        &format!(
            r#"
import json, shmpipe
ds = shmpipe.attach("{name}")
d = shmpipe.Dataset("{name}")
print(json.dumps({{"paths": list(ds.paths), "labels": ds.labels.tolist(), "classes": ds.classes,
                  "dtype": str(ds.labels.dtype), "sizes": ds.original_sizes.tolist(),
                  "formats": [ds.format(i) for i in range(len(ds))], "shape": list(ds.shape),
                  "items": [d[i][1] for i in range(len(d))], "writeable": ds.labels.flags.writeable}}))
"#
        ),
    );
    assert_eq!(
        said["paths"],
        serde_json::json!(["cat/a.png", "cat/deep/b.jpg", "dog/c.png"])
    );
    assert_eq!(said["classes"], serde_json::json!(["cat", "dog"]));
    assert_eq!(said["labels"], serde_json::json!([0, 0, 1]));
    assert_eq!(said["items"], serde_json::json!([0, 0, 1]));
    assert_eq!(said["dtype"], "int64");
    assert_eq!(said["writeable"], false);
    assert_eq!(
        said["sizes"],
        serde_json::json!([[40, 10], [16, 48], [30, 20]])
    );
    assert_eq!(said["formats"], serde_json::json!(["png", "jpeg", "png"]));
    assert_eq!(said["shape"], serde_json::json!([3, 8, 8, 3]));
    let ls: serde_json::Value = serde_json::from_str(&ok(&[os("ls"), os("--json")])).unwrap();
    let entry = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == format!("shmpipe-{name}"))
        .cloned()
        .unwrap();
    assert_eq!(entry["classes"], 2, "{entry}");
    let table = ok(&[os("ls")]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("shmpipe-{name} ")))
        .unwrap();
    assert!(
        row.contains(" 3       2 "),
        "ls shows images and classes: {row}"
    );

    // Without --labels: no labels, no classes, and ls says so.
    let plain = format!("pyplain{}", std::process::id());
    let _plain_cleanup = Dataset(plain.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&plain),
        os("-q"),
    ]);
    let said = python(
        &pythons()[0],
        &format!(
            "import json, shmpipe\nds = shmpipe.attach('{plain}')\nprint(json.dumps([ds.labels is None, ds.classes, shmpipe.Dataset('{plain}')[0][1], ds.original_sizes.tolist()]))"
        ),
    );
    assert_eq!(
        said,
        serde_json::json!([true, null, -1, [[40, 10], [16, 48], [30, 20]]])
    );

    // An image directly in the folder has no class: refused, naming it, no block made.
    image::RgbImage::new(4, 4)
        .save(input.join("loose.png"))
        .unwrap();
    let refused_name = format!("pyloose{}", std::process::id());
    let _refused_cleanup = Dataset(refused_name.clone());
    let out = common::run(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&refused_name),
        os("--labels"),
        os("folder"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let said = common::stderr(&out);
    assert!(
        said.contains("loose.png") && said.contains("not in a class folder"),
        "{said}"
    );
    assert!(!block_exists(&refused_name));
}
