//! The compiled augmentation as a training script uses it, through the Python package and the
//! real shared library on a real dataset: crop boxes equal to torchvision's `get_params` written
//! out in Python on the same random stream, flips and normalisation exact against NumPy, each
//! epoch different, every crop inside its image, the loader's epochs, and a batch of a dataset
//! removed, loaded again or damaged under it raising `BlockError`.

use std::path::{Path, PathBuf};

use crate::python_loader::{python, pythons};
use crate::util::{bin, ok, os, Dataset};

/// The shared library `cargo test` built: as this package's dev-dependency (in `deps/`), or
/// for the workspace (`target/debug`); the newer, as an older build may lie beside it.
pub(crate) fn library() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug");
    [
        target.join("deps/libshmpipe_augment.so"),
        target.join("libshmpipe_augment.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|(_, p)| p)
    .expect("cargo test builds libshmpipe_augment.so (a dev-dependency)")
}

/// Images of several shapes, some wider, some taller, loaded as `name` at shorter side 48.
pub(crate) fn dataset(root: &Path, name: &str) -> Dataset {
    let input = root.join("in");
    for (k, (w, h)) in [
        (80, 60),
        (60, 90),
        (50, 50),
        (120, 40),
        (33, 77),
        (200, 150),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = input.join(if k % 2 == 0 { "cat" } else { "dog" });
        std::fs::create_dir_all(&dir).unwrap();
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 3 + k as u32) as u8, (y * 5) as u8, ((x ^ y) * 7) as u8])
        })
        .save(dir.join(format!("{k}.png")))
        .unwrap();
    }
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(name),
        os("--resize"),
        os("48"),
        os("--labels"),
        os("folder"),
        os("-q"),
    ]);
    Dataset(name.to_string())
}

/// The start of a script on the dataset `name`: the library this build made, NumPy, the
/// package, and `ds` attached.
pub(crate) fn on_dataset(name: &str) -> String {
    format!(
        "import os, json\nos.environ[\"SHMPIPE_AUGMENT_LIB\"] = {lib:?}\nimport numpy as np, shmpipe\nds = shmpipe.Dataset(\"{name}\")\n",
        lib = library()
    )
}

/// torchvision's `RandomResizedCrop.get_params` (torchvision/transforms/transforms.py), the
/// same steps on the package's documented stream (augment/src/rng.rs), and the centred crop.
const REFERENCE: &str = r#"
import math
M = 2**64 - 1
G = 0x9E3779B97F4A7C15
def mix(z):
    z = (z + G) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
class Stream:
    def __init__(self, seed, epoch, index):
        self.state = mix(mix(mix(seed) ^ epoch) ^ index)
    def unit(self):
        self.state = (self.state + G) & M
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        z ^= z >> 31
        return (z >> 11) * (1.0 / 2**53)
    def uniform(self, a, b):
        return a + (b - a) * self.unit()
    def randint(self, lo, hi):  # torch.randint(lo, hi): hi excluded
        return lo + min(int(self.unit() * (hi - lo)), hi - lo - 1)
def get_params(rng, height, width, scale, ratio):
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = rng.randint(0, height - h + 1)
            j = rng.randint(0, width - w + 1)
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    i = (height - h) // 2
    j = (width - w) // 2
    return i, j, h, w
def plan(seed, epoch, index, height, width, scale, ratio, flip):
    rng = Stream(seed, epoch, index)
    i, j, h, w = get_params(rng, height, width, scale, ratio)
    return [i, j, h, w, int(rng.unit() < flip)]
def centre(height, width, out_h, out_w, fraction):
    aspect = out_w / out_h
    w, h = (height * aspect, height) if width / height > aspect else (width, width / aspect)
    w = min(max(int(round(w * fraction)), 1), width)
    h = min(max(int(round(h * fraction)), 1), height)
    return [(height - h) // 2, (width - w) // 2, h, w]
"#;

#[test]
fn crops_are_torchvisions_and_flips_and_normalisation_are_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("aug{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    for py in pythons() {
        let said = python(
            &py,
            &format!(
                r#"{REFERENCE}
import os
os.environ["SHMPIPE_AUGMENT_LIB"] = {lib:?}
import json
import numpy as np
import shmpipe
ds = shmpipe.Dataset("{name}")
block = ds.block
shapes = [im.shape for im in block.images]
n = len(ds)
scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
checks = {{}}
boxes_by_epoch = []
for epoch in range(3):
    aug = shmpipe.RandomResizedCrop(24, scale=scale, ratio=ratio, flip=0.5, seed=11)
    x, boxes = aug.batch(ds, range(n), epoch=epoch, boxes=True)
    want = [plan(11, epoch, i, shapes[i][0], shapes[i][1], scale, ratio, 0.5) for i in range(n)]
    assert boxes.tolist() == want, (epoch, boxes.tolist(), want)
    for (i, j, h, w, _), (H, W, _c) in zip(boxes.tolist(), shapes):
        assert 0 <= i and i + h <= H and 0 <= j and j + w <= W
    boxes_by_epoch.append(boxes.tolist())
    # Normalisation: exactly NumPy's float32 arithmetic on the uint8 batch, as (B, C, H, W).
    norm = shmpipe.RandomResizedCrop(24, scale=scale, ratio=ratio, flip=0.5, seed=11,
                                     mean=mean, std=std)
    y = norm.batch(ds, range(n), epoch=epoch)
    m32, s32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    expected = ((x.astype(np.float32) / np.float32(255) - m32) / s32).transpose(0, 3, 1, 2)
    assert y.dtype == np.float32 and y.shape == (n, 3, 24, 24)
    assert np.array_equal(y, expected)
    # Flips: the same boxes with p = 1 and p = 0 (the flip is drawn after them), mirrored.
    always = shmpipe.RandomResizedCrop(24, scale=scale, ratio=ratio, flip=1.0, seed=11)
    never = shmpipe.RandomResizedCrop(24, scale=scale, ratio=ratio, flip=0.0, seed=11)
    a, ab = always.batch(ds, range(n), epoch=epoch, boxes=True)
    b, bb = never.batch(ds, range(n), epoch=epoch, boxes=True)
    assert (ab[:, :4] == bb[:, :4]).all() and ab[:, 4].all() and not bb[:, 4].any()
    assert np.array_equal(a, b[:, :, ::-1, :])
    # A batch of any indices, in any order, gives each image its own crop.
    picked = [4, 0, 4, 2]
    p, pb = aug.batch(ds, picked, epoch=epoch, boxes=True)
    assert pb.tolist() == [want[i] for i in picked]
    assert np.array_equal(p[1], x[0]) and np.array_equal(p[0], p[2])
checks["epochs_differ"] = sum(a != b for a, b in zip(boxes_by_epoch[0], boxes_by_epoch[1]))
# A DataLoader's collate_fn over the Dataset's own items: the same batch, with the labels.
aug = shmpipe.RandomResizedCrop(24, seed=11)
aug.set_epoch(2)
images, labels = aug.collate([ds[i] for i in (3, 1)])
assert np.array_equal(images, aug.batch(ds, [3, 1], epoch=2))
assert labels.tolist() == [int(block.labels[3]), int(block.labels[1])]
# `out=`: the batch written into an array of the caller's; a wrong one refused.
out = np.empty((2, 3, 24, 24), np.float32)
norm.batch(ds, [3, 1], epoch=2, out=out)
assert np.array_equal(out, norm.batch(ds, [3, 1], epoch=2))
try:
    norm.batch(ds, [3, 1], out=np.empty((2, 24, 24, 3), np.float32))
    raise SystemExit("a wrong out= was taken")
except ValueError:
    pass
# Validation: the centred crop, the same in every epoch.
val = shmpipe.CenterCrop((20, 24), fraction=0.875)
v0, vb = val.batch(ds, range(n), epoch=0, boxes=True)
v1 = val.batch(ds, range(n), epoch=5)
assert np.array_equal(v0, v1)
assert vb[:, :4].tolist() == [centre(s[0], s[1], 20, 24, 0.875) for s in shapes], vb.tolist()
# The loader: every image once an epoch, with its label, reshuffled each epoch.
loader = shmpipe.Loader(ds, shmpipe.RandomResizedCrop(16, seed=3), batch_size=4, seed=1)
orders = []
for epoch in range(2):
    loader.set_epoch(epoch)
    seen = []
    for images, labels in loader:
        assert images.shape[1:] == (16, 16, 3) and len(images) == len(labels) <= 4
        seen += labels.tolist()
    assert sorted(seen) == sorted(block.labels.tolist())
    orders.append(seen)
checks["batches"] = len(loader)
# recycle=2: batch k + 2 is written into batch k's array, with the pixels a fresh batch has.
loader = shmpipe.Loader(ds, shmpipe.RandomResizedCrop(16, seed=3), batch_size=2, seed=1,
                        recycle=2)
arrays = [images.copy() for images, _ in loader]
same = [images for images, _ in loader]
assert same[2] is same[0] and same[1] is not same[0]
fresh = shmpipe.Loader(ds, shmpipe.RandomResizedCrop(16, seed=3), batch_size=2, seed=1)
assert all(np.array_equal(a, b) for a, (b, _) in zip(arrays, fresh))
# Without recycle: an array nothing else holds is written again; a kept batch, or one a view
# still holds, never is.
loader = shmpipe.Loader(ds, shmpipe.RandomResizedCrop(16, seed=3), batch_size=2, seed=1)
kept = [images for images, _ in loader]
assert len({{id(a) for a in kept}}) == 3
assert all(np.array_equal(a, b) for a, b in zip(arrays, kept))
import weakref
first, reused = None, []
for k, (images, _) in enumerate(loader):
    if k == 0:
        first = weakref.ref(images)
    else:
        reused.append(images is first())
assert reused == [False, True], reused
views = [images[0] for images, _ in loader]
assert all(np.array_equal(v, a[0]) for v, a in zip(views, arrays))
print(json.dumps(checks))
"#,
                lib = library(),
            ),
        );
        assert!(said["epochs_differ"].as_u64().unwrap() >= 5, "{py}: {said}");
        assert_eq!(said["batches"], 2, "{py}");
    }
}

/// examples/augment.py (README's excerpt) as a user runs it: every image once an epoch, and the
/// same figures on a second run (seeded).
#[test]
fn the_example_runs_its_epochs_and_runs_again_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("augexample{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/augment.py");
    let run = || {
        let out = std::process::Command::new(&pythons()[0])
            .arg(&example)
            .args([name.as_str(), "--epochs", "2", "--batch", "4"])
            .env(
                "PYTHONPATH",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
            )
            .env("SHMPIPE_AUGMENT_LIB", library())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The figures but the timings.
        said.lines()
            .map(|l| {
                assert!(
                    l.starts_with("epoch ") && l.contains(": 6 images in "),
                    "{l}"
                );
                l.rsplit_once("mean ").unwrap().1.to_string()
            })
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 2);
    assert_ne!(first[0], first[1], "two epochs, two draws");
    assert_eq!(first, run());
}

#[test]
fn a_batch_of_a_dataset_removed_reloaded_or_damaged_under_it_raises_block_error() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("augfault{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let input = tmp.path().join("in");
    let py = &pythons()[0];
    let said = python(
        py,
        &format!(
            r#"
import json, os, subprocess
os.environ["SHMPIPE_AUGMENT_LIB"] = {lib:?}
import shmpipe
SHMPIPE, NAME, INPUT = {bin:?}, "{name}", {input:?}
def run(*args):
    subprocess.run([SHMPIPE, *args], check=True, capture_output=True)
def refused(ds, aug):
    try:
        aug.batch(ds, [0, 1])
    except shmpipe.BlockError as e:
        return str(e)
    raise AssertionError("a batch was made")
aug = shmpipe.RandomResizedCrop(16, seed=1)
said = {{}}
ds = shmpipe.Dataset(NAME)
assert aug.batch(ds, [0, 1]).shape == (2, 16, 16, 3)
run("rm", "--force", NAME)                      # its readers keep their mapping; the name goes
said["removed"] = refused(ds, aug)
run("load", INPUT, "--name", NAME, "--resize", "48", "-q")
said["reloaded"] = refused(ds, aug)
ds.close()
ds = shmpipe.Dataset(NAME)                       # the new one: fine
assert aug.batch(ds, [0]).shape == (1, 16, 16, 3)
path = os.path.join("/dev/shm", "shmpipe-" + NAME)
with open(path, "r+b") as f:                     # its header overwritten
    f.write(b"XXXXXXXX")
said["damaged_header"] = refused(ds, aug)
with open(path, "r+b") as f:
    f.write(b"SHMPIPE\0")
assert aug.batch(ds, [0]).shape == (1, 16, 16, 3)
os.truncate(path, os.path.getsize(path) // 2)    # cut short under the mapping: no SIGBUS
said["cut_short"] = refused(ds, aug)
ds.close()
print(json.dumps(said))
"#,
            bin = bin(),
            input = input,
            lib = library(),
        ),
    );
    let says = |key: &str, what: &str| {
        let text = said[key].as_str().unwrap_or_default();
        assert!(text.contains(what), "{key}: {text}");
    };
    says("removed", "the dataset was removed");
    says("reloaded", "removed and loaded again");
    says("damaged_header", "damaged");
    says("cut_short", "damaged");
}

/// Single-node data-parallel training as torch's `DistributedSampler` splits it: two ranks,
/// each a process started by spawn with the dataset's name and a pickled augmentation, each
/// iterating `Loader` over its own share; together they see every image once an epoch, from the
/// one copy in shared memory.
#[test]
fn two_ranks_with_a_distributed_sampler_share_one_copy_and_cover_the_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("augddp{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    // A file, not `-c`: spawn's children import the main module from it.
    let script = tmp.path().join("ranks.py");
    std::fs::write(
        &script,
        format!(
            r#"
import os
os.environ["SHMPIPE_AUGMENT_LIB"] = {lib:?}
import json, multiprocessing as mp, pickle
import numpy as np
import shmpipe

class Sampler:
    """torch.utils.data.DistributedSampler's order: a seeded permutation per epoch, padded to a
    multiple of the ranks, every `world`-th index from `rank`."""
    def __init__(self, n, world, rank, seed=0):
        self.n, self.world, self.rank, self.seed, self.epoch = n, world, rank, seed, 0
    def set_epoch(self, epoch):
        self.epoch = epoch
    def __iter__(self):
        order = np.random.default_rng(self.seed + self.epoch).permutation(self.n).tolist()
        order += order[: (-len(order)) % self.world]
        return iter(order[self.rank :: self.world])
    def __len__(self):
        return -(-self.n // self.world)

def rank(args):
    name, aug_bytes, r = args
    ds = shmpipe.Dataset(name)
    aug = pickle.loads(aug_bytes)
    sampler = Sampler(len(ds), 2, r)
    loader = shmpipe.Loader(ds, aug, batch_size=2, sampler=sampler)
    seen = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        labels = [int(l) for _, batch in loader for l in batch]
        mine = list(sampler)
        assert labels == [int(ds.block.labels[i]) for i in mine], (labels, mine)
        seen.append(mine)
    return seen

if __name__ == "__main__":
    aug = shmpipe.RandomResizedCrop(16, seed=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    with mp.get_context("spawn").Pool(2) as pool:
        ranks = pool.map(rank, [("{name}", pickle.dumps(aug), r) for r in range(2)])
    for epoch in range(2):
        both = sorted(ranks[0][epoch] + ranks[1][epoch])
        assert both == list(range(6)), both
    assert ranks[0][0] != ranks[0][1], "each epoch its own order"
    print(json.dumps({{"ranks": len(ranks)}}))
"#,
            lib = library(),
        ),
    )
    .unwrap();
    let child = std::process::Command::new(&pythons()[0])
        .arg(&script)
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = crate::util::finish(child, "two ranks");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(r#"{"ranks": 2}"#), "{said}");
}

/// `export NAME FILE.npz`: NumPy reads the images, labels, paths and classes the dataset holds,
/// each equal to what the package's handle gives; a dataset without labels has -1 and no
/// classes.
#[test]
fn export_npz_carries_labels_paths_and_classes_beside_the_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("augnpz{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let plain = format!("augnpzplain{}", std::process::id());
    ok(&[
        os("load"),
        tmp.path().join("in").as_os_str(),
        os("--name"),
        os(&plain),
        os("--resize"),
        os("20x10"),
        os("--fit"),
        os("stretch"),
        os("-q"),
    ]);
    let _plain_guard = Dataset(plain.clone());
    let (labelled, unlabelled) = (tmp.path().join("l.npz"), tmp.path().join("u.npz"));
    // The labelled dataset is ragged (shorter side 48; its export is the next test's): it is
    // made again at one size under another name.
    let uniform = format!("augnpzuniform{}", std::process::id());
    ok(&[
        os("load"),
        tmp.path().join("in").as_os_str(),
        os("--name"),
        os(&uniform),
        os("--resize"),
        os("16x12"),
        os("--fit"),
        os("stretch"),
        os("--labels"),
        os("folder"),
        os("-q"),
    ]);
    let _uniform_guard = Dataset(uniform.clone());
    ok(&[os("export"), os(&uniform), labelled.as_os_str()]);
    ok(&[os("export"), os(&plain), unlabelled.as_os_str()]);
    let said = python(
        &pythons()[0],
        &format!(
            r#"
import json
import numpy as np
import shmpipe
said = {{}}
for name, path in (("{uniform}", {labelled:?}), ("{plain}", {unlabelled:?})):
    block = shmpipe.attach(name)
    with np.load(path) as f:
        assert np.array_equal(f["images"], block.array), name
        assert f["paths"].tolist() == list(block.paths), (f["paths"], list(block.paths))
        labels = f["labels"].tolist()
        if block.labels is None:
            assert labels == [-1] * len(block) and "classes" not in f.files, f.files
        else:
            assert labels == block.labels.tolist() and f["classes"].tolist() == block.classes
        said[name] = sorted(f.files)
    got = shmpipe.read_export(path)
    assert np.array_equal(got.images, block.array) and got.paths == list(block.paths), name
    block.close()
print(json.dumps(said))
"#
        ),
    );
    assert_eq!(
        said[&uniform],
        serde_json::json!(["classes", "images", "labels", "paths"])
    );
    assert_eq!(
        said[&plain],
        serde_json::json!(["images", "labels", "paths"])
    );
    assert_eq!(files_in(tmp.path()), ["in", "l.npz", "u.npz"]);
}

/// A dataset of its own shapes (stored at shorter side 48, as for augmentation) exports to an
/// `.npz` that keeps each image's shape: `pixels`, `offsets` and `shapes` beside the labels,
/// paths and classes, every image equal to the block's, read back by `shmpipe.read_export`
/// (which also reads a uniform export); a `.npy` of it is refused naming the `.npz`, and a
/// cut or forged export is refused by the reader.
#[test]
fn a_ragged_dataset_exports_to_npz_each_image_its_own_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("augragged{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let npz = tmp.path().join("r.npz");
    ok(&[os("export"), os(&name), npz.as_os_str()]);
    let npy = tmp.path().join("r.npy");
    let refused = crate::util::shmpipe(&[os("export"), os(&name), npy.as_os_str()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        crate::util::stderr(&refused).contains("export to a .npz"),
        "{}",
        crate::util::stderr(&refused)
    );
    let said = python(
        &pythons()[0],
        &format!(
            r#"{start}
import numpy as np
with np.load({npz:?}) as f:
    files = sorted(f.files)
    pixels, offsets, shapes = f["pixels"], f["offsets"], f["shapes"]
    raw = [pixels[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
    forged = {{k: f[k] for k in f.files}}
block = ds.block
assert len(raw) == len(block)
for i in range(len(block)):
    assert np.array_equal(raw[i], block.images[i]), i
got = shmpipe.read_export({npz:?})
assert all(np.array_equal(a, b) for a, b in zip(got.images, raw))
assert got.labels.tolist() == block.labels.tolist() and got.classes == block.classes
assert got.paths == list(block.paths)
def refused_when(key, change):
    bad = dict(forged)
    bad[key] = change(bad[key].copy())
    np.savez({bad:?}, **bad)
    try:
        shmpipe.read_export({bad:?})
        return None
    except ValueError as e:
        return str(e)
def shifted(offsets):
    offsets[1] += 1
    return offsets
def negated(shapes):
    shapes[0, :2] *= -1  # the same product, a negative shape
    return shapes
refusals = [refused_when("offsets", shifted), refused_when("shapes", negated)]
refused = refusals[0] if refusals[0] == refusals[1] else refusals
print(json.dumps({{"files": files, "shapes": [list(map(int, s)) for s in shapes],
                   "refused": refused}}))
"#,
            start = on_dataset(&name),
            npz = npz,
            bad = tmp.path().join("bad.npz"),
        ),
    );
    assert_eq!(
        said["files"],
        serde_json::json!(["classes", "labels", "offsets", "paths", "pixels", "shapes"])
    );
    let shapes = said["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 6);
    assert!(
        shapes
            .iter()
            .any(|s| s[0] != shapes[0][0] || s[1] != shapes[0][1]),
        "the dataset is ragged: {shapes:?}"
    );
    assert!(
        said["refused"]
            .as_str()
            .is_some_and(|r| r.contains("do not cut its pixels into images")),
        "{said}"
    );
}

/// The names in `dir`, sorted: no temporary left beside an export.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The library keeps its threads from one batch to the next. A process forked after a batch
/// (a DataLoader's workers under fork) has none of them: its batches are made by threads of its
/// own, alike, and never wait for the parent's.
#[test]
fn a_process_forked_after_a_batch_makes_its_own_batches_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("augfork{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let said = python(
        &pythons()[0],
        &format!(
            r#"{start}
import signal
aug = shmpipe.RandomResizedCrop(24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed=9)
want = aug.batch(ds, range(len(ds)), threads=2)
children = {{}}
for threads in (1, 2, 3):
    pid = os.fork()
    if pid == 0:
        signal.alarm(30)  # a child that waits for threads it does not have dies, not hangs
        got = aug.batch(ds, range(len(ds)), threads=threads)
        again = aug.batch(ds, range(len(ds)), threads=threads)
        os._exit(0 if np.array_equal(got, want) and np.array_equal(again, want) else 1)
    children[threads] = os.waitpid(pid, 0)[1]
print(json.dumps({{str(k): v for k, v in children.items()}}))
"#,
            start = on_dataset(&name),
        ),
    );
    assert_eq!(said, serde_json::json!({"1": 0, "2": 0, "3": 0}));
}

/// A training process killed while its loader's threads read the block (SIGKILL, SIGTERM, or
/// Ctrl-C's SIGINT) ends, promptly, and leaves nothing behind: no lock (a writable handle
/// attaches), the dataset still listed ready, and the same seed giving the same batches as
/// before it was killed.
#[test]
fn a_loader_killed_mid_epoch_leaves_the_dataset_as_it_was() {
    use rustix::process::{kill_process, Pid, Signal};
    use std::time::{Duration, Instant};

    use crate::python_loader::{listed, python_until, refusal};

    let tmp = tempfile::tempdir().unwrap();
    let name = format!("augkill{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let digest = format!(
        r#"{start}
import hashlib
aug = shmpipe.RandomResizedCrop(96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed=5)
def digest():
    h = hashlib.sha256()
    for epoch in range(2):
        loader = shmpipe.Loader(ds, aug, 4, seed=5, threads=2, tensors=False)
        loader.set_epoch(epoch)
        for images, labels in loader:
            h.update(images.tobytes())
            h.update(labels.tobytes())
    return h.hexdigest()
"#,
        start = on_dataset(&name),
    );
    let before = python(
        &pythons()[0],
        &format!("{digest}\nimport json\nprint(json.dumps(digest()))\n"),
    );
    for signal in [Signal::KILL, Signal::TERM, Signal::INT] {
        // Batches without end: whenever the signal comes, threads are reading the block.
        let mut child = python_until(
            &format!("{digest}\nprint('ready', flush=True)\nwhile True:\n    digest()\n"),
            "ready",
        );
        std::thread::sleep(Duration::from_millis(300));
        kill_process(Pid::from_raw(child.id() as i32).unwrap(), signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{signal:?}: the loader did not end"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "{signal:?}: {status:?}");
        assert_eq!(refusal(&name, true), "", "{signal:?}: no lock left");
        let entry = listed(&name).expect("the dataset is still listed");
        assert_eq!(entry["state"], "ready", "{signal:?}: {entry}");
        let after = python(
            &pythons()[0],
            &format!("{digest}\nimport json\nprint(json.dumps(digest()))\n"),
        );
        assert_eq!(after, before, "{signal:?}: the same batches as before");
    }
}

/// Arguments that cannot make a batch are refused with what they should be, before any pixel
/// is read: a float or bool index (NumPy's and torch's rule: 0.5 never means image 0), one past
/// the end, a size of 0, a flip that is not a probability, a scale or ratio the wrong way
/// round, a std of 0, a batch size of 0. Negative indices count from the end, as in Python.
#[test]
fn arguments_that_cannot_make_a_batch_are_refused_with_what_they_should_be() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("augargs{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let said = python(
        &pythons()[0],
        &format!(
            r#"{start}
aug = shmpipe.RandomResizedCrop(16, seed=1)
def refused(make):
    try:
        make()
    except Exception as e:
        return [type(e).__name__, str(e)]
    return None
said = {{
    "float": refused(lambda: aug.batch(ds, [0.5])),
    "bool": refused(lambda: aug.batch(ds, np.array([True, False]))),
    "past": refused(lambda: aug.batch(ds, [len(ds)])),
    "huge": refused(lambda: aug.batch(ds, np.array([2**64 - 1], np.uint64))),
    "size0": refused(lambda: shmpipe.RandomResizedCrop(0)),
    "flip": refused(lambda: shmpipe.RandomResizedCrop(16, flip=2)),
    "scale": refused(lambda: shmpipe.RandomResizedCrop(16, scale=(0.9, 0.1))),
    "ratio": refused(lambda: shmpipe.RandomResizedCrop(16, ratio=(0, 1))),
    "std": refused(lambda: shmpipe.RandomResizedCrop(16, mean=(0.5,) * 3, std=(0, 1, 1))),
    "batch": refused(lambda: shmpipe.Loader(ds, aug, 0)),
    "empty": list(aug.batch(ds, []).shape),
    "last": bool(np.array_equal(aug.batch(ds, [-1]), aug.batch(ds, [len(ds) - 1]))),
}}
print(json.dumps(said))
"#,
            start = on_dataset(&name),
        ),
    );
    let refused = |key: &str, kind: &str, what: &str| {
        assert_eq!(said[key][0], kind, "{key}: {}", said[key]);
        let text = said[key][1].as_str().unwrap();
        assert!(text.contains(what), "{key}: {text}");
    };
    refused("float", "TypeError", "indices are integers, not float64");
    refused("bool", "TypeError", "indices are integers, not bool");
    refused("past", "IndexError", "an index outside its 6 images");
    refused("huge", "IndexError", "an index outside its 6 images");
    refused("size0", "ValueError", "each at least 1");
    refused("flip", "ValueError", "a probability from 0 to 1");
    refused("scale", "ValueError", "0 < low <= high");
    refused("ratio", "ValueError", "0 < low <= high");
    refused("std", "ValueError", "a std of 0");
    refused("batch", "ValueError", "batch_size is at least 1");
    assert_eq!(said["empty"], serde_json::json!([0, 16, 16, 3]));
    assert_eq!(said["last"], true);
}
