#!/usr/bin/env python3
"""A training loop whose data-loader workers all read the one decoded copy of a dataset that
`shmpipe load` keeps in shared memory.

    shmpipe gen /tmp/train/cats --count 32 --size 320x240 --seed 1
    shmpipe gen /tmp/train/dogs --count 32 --size 320x240 --seed 2
    shmpipe load /tmp/train --name train --resize 224x224 --fit cover --labels folder
    python3 examples/train.py train --workers 2 --epochs 3
    shmpipe rm train

The loader: with torch installed, torch's `DataLoader` over `shmpipe.Dataset` with
`collate_fn=shmpipe.collate` (a batch travels from a worker as the block's name and the images'
indices; this process gathers the pixels from its own mapping); without torch, or with
`--loader pool`, the same batches from a `multiprocessing` pool of the same start method. Either
way the workers start under forkserver (Python 3.14's default on Linux), with shmpipe and NumPy
(and torch) preloaded by the fork server, and serve every epoch (`persistent_workers=True`).

The model is a softmax regression on each image's per-channel mean and deviation, in NumPy, so
that the example runs where torch is not installed. With torch imported, a batch unpacks as
tensors over its arrays' memory (`images.permute(0, 3, 1, 2)` for a model's NCHW), which
`np.asarray` shows as arrays again, without a copy. On the folders of the example above,
whose two classes are `shmpipe gen` images that differ only in their seed, there is nothing to
learn: accuracy stays near 0.5. Point it at a real `--labels folder` dataset.

The `if __name__ == "__main__":` guard is required: forkserver and spawn workers import this file
again (as `__mp_main__`), and without the guard each would start a training of its own.
Tested by tests/integration/python_loader.rs (the pool; the DataLoader way is what benches/loader.py runs).
"""
import argparse
import multiprocessing
import random

import numpy as np

import shmpipe

try:
    import torch.utils.data
except ImportError:
    torch = None

_dataset = None  # a pool worker's Dataset, attached by name in that worker


def _start_worker(dataset):
    global _dataset
    _dataset = dataset


def _batch(indices):
    """A pool worker's batch, as a DataLoader worker makes it with collate_fn=shmpipe.collate."""
    return shmpipe.collate([_dataset[i] for i in indices])


def pool_epochs(dataset, ctx, args):
    """Each epoch's batches (shuffled), from a pool that serves every epoch."""
    with ctx.Pool(args.workers, initializer=_start_worker, initargs=(dataset,)) as pool:
        for _ in range(args.epochs):
            order = list(range(len(dataset)))
            random.shuffle(order)
            yield pool.imap(_batch, [order[k:k + args.batch] for k in range(0, len(order), args.batch)])


def torch_epochs(dataset, ctx, args):
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
        persistent_workers=True, multiprocessing_context=ctx, collate_fn=shmpipe.collate)
    for _ in range(args.epochs):
        yield loader


def features(images):
    """(B, 7): each image's per-channel mean and deviation, scaled to about [0, 1], and a bias."""
    if isinstance(images, list):  # images of different shapes come as a list
        images = [np.asarray(im) for im in images]
        stats = [np.concatenate([im.mean(axis=(0, 1)), im.std(axis=(0, 1))]) for im in images]
        x = np.stack(stats)
    else:
        images = np.asarray(images)
        x = np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)
    return np.concatenate([x / 255.0, np.ones((len(x), 1))], axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a dataset loaded with --labels folder")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--loader", choices=["auto", "torch", "pool"], default="auto")
    parser.add_argument("--start-method", default="forkserver", choices=["forkserver", "spawn", "fork"])
    args = parser.parse_args()

    use_torch = args.loader == "torch" or (args.loader == "auto" and torch is not None)
    ctx = multiprocessing.get_context(args.start_method)
    if args.start_method == "forkserver":
        # Python 3.10 to 3.13 never preload this script's imports in the fork server: name them.
        ctx.set_forkserver_preload(["numpy", "shmpipe"] + (["torch"] if use_torch else []))
    dataset = shmpipe.Dataset(args.name)  # attached here; workers attach by name
    classes = dataset.classes
    if not classes:
        parser.error(f"{args.name} has no labels: load it with --labels folder")
    weights = np.zeros((7, len(classes)))
    epochs = torch_epochs if use_torch else pool_epochs
    print(f"{args.name}: {len(dataset)} images, classes {classes}, "
          f"{'torch DataLoader' if use_torch else 'multiprocessing pool'} "
          f"({args.start_method}, {args.workers} workers)")
    for epoch, batches in enumerate(epochs(dataset, ctx, args), start=1):
        seen = correct = 0
        loss = 0.0
        for images, labels in batches:  # images: a fresh (B, H, W, C) uint8 array
            x = features(images)
            scores = x @ weights
            p = np.exp(scores - scores.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            loss += float(-np.log(p[np.arange(len(labels)), labels] + 1e-12).sum())
            correct += int((p.argmax(axis=1) == labels).sum())
            seen += len(labels)
            p[np.arange(len(labels)), labels] -= 1.0
            weights -= args.lr * x.T @ p / len(labels)
        print(f"epoch {epoch}: {seen} images, loss {loss / seen:.3f}, accuracy {correct / seen:.2f}")
    dataset.close()


if __name__ == "__main__":
    main()
