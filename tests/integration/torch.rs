//! The package with torch, as a training script uses it: `Loader` and the collates give tensors
//! over the batches' own memory when the program imported torch, NumPy when it did not (and
//! torch is then never imported); `pin_memory` without an accelerator warns and does not pin, as
//! torch's DataLoader does; a transform that makes tensors collates; and `torchrun` with two
//! ranks trains from one shared copy (`examples/ddp.py`), every image once an epoch.
//!
//! torch is large (its PyPI build carries CUDA: several GB), so these tests need an interpreter
//! that has it: `SHMPIPE_TORCH_PYTHON`, else the first of the test interpreters that imports it.
//! Without one they say so on stderr and check nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::augment::{dataset, library, on_dataset};
use crate::python_loader::{python, pythons};

/// The interpreter with torch, or None (said on stderr).
fn torch_python() -> Option<String> {
    let candidates = match std::env::var("SHMPIPE_TORCH_PYTHON") {
        Ok(p) if !p.trim().is_empty() => vec![p],
        _ => pythons(),
    };
    let found = candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import torch, torchvision"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        eprintln!("no interpreter with torch and torchvision (SHMPIPE_TORCH_PYTHON): not checked");
    }
    found
}

#[test]
fn loader_batches_are_tensors_when_torch_is_imported_and_numpy_otherwise() {
    let Some(py) = torch_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("torchload{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    // Without torch imported: arrays, and the package does not import torch itself.
    let plain = python(
        &py,
        &format!(
            r#"{start}
import sys
aug = shmpipe.RandomResizedCrop(24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed=3)
kinds = [type(x).__name__ + "/" + type(y).__name__ for x, y in shmpipe.Loader(ds, aug, 4)]
print(json.dumps({{"kinds": kinds, "torch": "torch" in sys.modules}}))
"#,
            start = on_dataset(&name),
        ),
    );
    assert_eq!(
        plain["kinds"],
        serde_json::json!(vec!["ndarray/ndarray"; 2])
    );
    assert_eq!(plain["torch"], false, "the package imported torch");
    let said = python(
        &py,
        &format!(
            r#"{start}
import torch, warnings
aug = shmpipe.RandomResizedCrop(24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed=3)
out = {{}}
tensors = list(shmpipe.Loader(ds, aug, 4, shuffle=False))
arrays = list(shmpipe.Loader(ds, aug, 4, shuffle=False, tensors=False))
out["kinds"] = [type(x).__name__ + "/" + type(y).__name__ for x, y in tensors]
out["arrays"] = [type(x).__name__ for x, _ in arrays]
out["dtypes"] = [str(x.dtype) + "/" + str(y.dtype) for x, y in tensors]
out["shape"] = list(tensors[0][0].shape)
# The same pixels and labels as the arrays, bit for bit.
out["same"] = all(torch.equal(x, torch.from_numpy(a)) and torch.equal(y, torch.from_numpy(b))
                  for (x, y), (a, b) in zip(tensors, arrays))
out["labels"] = torch.cat([y for _, y in tensors]).tolist()
out["want_labels"] = ds.targets
# uint8 batches (no normalisation) are tensors too.
out["uint8"] = [str(x.dtype) for x, _ in shmpipe.Loader(ds, shmpipe.CenterCrop(16), 6)]
# pin_memory without an accelerator: warned, not pinned, still tensors; recycled batches are
# the same tensors' memory.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pinned = [(x.is_pinned(), x.data_ptr()) for x, _ in
              shmpipe.Loader(ds, aug, 2, pin_memory=True, recycle=1, shuffle=False)]
out["pinned"] = [p for p, _ in pinned]
out["one_memory"] = len({{ptr for _, ptr in pinned}}) == 1
out["warned"] = [str(w.message) for w in caught]
print(json.dumps(out))
"#,
            start = on_dataset(&name),
        ),
    );
    assert_eq!(said["kinds"], serde_json::json!(vec!["Tensor/Tensor"; 2]));
    assert_eq!(said["arrays"], serde_json::json!(vec!["ndarray"; 2]));
    assert_eq!(
        said["dtypes"],
        serde_json::json!(vec!["torch.float32/torch.int64"; 2])
    );
    assert_eq!(said["shape"], serde_json::json!([4, 3, 24, 24]));
    assert_eq!(said["same"], true);
    assert_eq!(said["labels"], said["want_labels"]);
    assert_eq!(said["uint8"], serde_json::json!(["torch.uint8"]));
    assert_eq!(said["pinned"], serde_json::json!(vec![false; 3]));
    assert_eq!(said["one_memory"], true);
    assert!(
        said["warned"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("no accelerator")),
        "{said}"
    );
}

#[test]
fn a_dataloader_gets_tensors_from_the_collates_and_from_a_transform_that_makes_them() {
    let Some(py) = torch_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("torchdl{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let said = python(
        &py,
        &format!(
            r#"
import os, json
os.environ["SHMPIPE_AUGMENT_LIB"] = {lib:?}
import numpy as np, torch, shmpipe
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader

def main():
    ds = shmpipe.Dataset("{name}")
    aug = shmpipe.RandomResizedCrop(24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed=5)
    out = {{}}
    # aug.collate in two workers: tensors, equal to the same images made here.
    got = [(x, y) for x, y in DataLoader(ds, batch_size=3, collate_fn=aug.collate,
                                         num_workers=2, pin_memory=True)]
    out["aug"] = [type(x).__name__ for x, _ in got]
    want = aug.batch(ds, range(len(ds)))
    out["aug_same"] = torch.equal(torch.cat([x for x, _ in got]), torch.from_numpy(want))
    # shmpipe.collate: reference batches, unpacked as tensors equal to the dataset's images.
    images, labels = [], []
    for x, y in DataLoader(ds, batch_size=3, collate_fn=shmpipe.collate, num_workers=2):
        images += x
        labels += y.tolist()
    out["collate"] = sorted({{type(x).__name__ for x in images}})
    out["collate_same"] = all(torch.equal(x, torch.from_numpy(np.asarray(v)))
                              for x, v in zip(images, ds.block.images))
    out["labels"] = labels == ds.targets
    # A transform that makes tensors (torchvision's) goes through torch's own collation.
    ds2 = shmpipe.Dataset("{name}", transform=T.Compose([T.ToImage(), T.CenterCrop(32)]))
    batches = list(DataLoader(ds2, batch_size=3, collate_fn=shmpipe.collate, num_workers=2))
    out["transform"] = [[type(x).__name__, list(x.shape), type(y).__name__] for x, y in batches]
    print(json.dumps(out))

if __name__ == "__main__":
    main()
"#,
            lib = library(),
        ),
    );
    assert_eq!(said["aug"], serde_json::json!(vec!["Tensor"; 2]));
    assert_eq!(said["aug_same"], true, "{said}");
    assert_eq!(said["collate"], serde_json::json!(["Tensor"]));
    assert_eq!(said["collate_same"], true);
    assert_eq!(said["labels"], true);
    assert_eq!(
        said["transform"],
        serde_json::json!([
            ["Tensor", [3, 3, 32, 32], "Tensor"],
            ["Tensor", [3, 3, 32, 32], "Tensor"]
        ])
    );
}

/// `examples/ddp.py` under `torchrun` with two ranks on the CPU (gloo): each epoch the ranks
/// train on every image once between them, from the one block the load made.
#[test]
fn torchrun_with_two_ranks_trains_on_every_image_once_an_epoch_from_one_copy() {
    let Some(py) = torch_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("torchddp{}", std::process::id());
    let _guard = dataset(tmp.path(), &name);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ddp.py");
    let package: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let child = Command::new(&py)
        .args([
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
        ])
        .arg(&example)
        .args([
            name.as_str(),
            "--epochs",
            "2",
            "--batch",
            "2",
            "--size",
            "32",
        ])
        .env("PYTHONPATH", &package)
        .env("SHMPIPE_AUGMENT_LIB", library())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("torchrun starts");
    let done = crate::util::finish(child, "torchrun");
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    for epoch in 0..2 {
        assert!(
            stdout.contains(&format!(
                "epoch {epoch}: 2 ranks, 6 images, 6 of 6 distinct, loss "
            )),
            "{stdout}"
        );
    }
}
