#!/usr/bin/env python3
"""Epochs of augmented training batches, made by compiled code from a dataset stored once at
shorter side 256: RandomResizedCrop(224), a flip and normalisation, on threads, in this process.

    shmpipe load photos/ --name train --resize 256 --labels folder
    python3 examples/augment.py train --epochs 2

Prints each epoch's images/s and the mean of its batches (the same on every run: seed 0).
"""
import argparse
import time

import numpy as np

import shmpipe


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a dataset made by `shmpipe load DIR --name NAME`")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    train = shmpipe.Dataset(args.name)
    seen, total = 0, 0.0
    start = time.perf_counter()
    aug = shmpipe.RandomResizedCrop(224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    batches = shmpipe.Loader(train, aug, batch_size=args.batch)
    for epoch in range(args.epochs):
        batches.set_epoch(epoch)  # a new order, new crops and flips
        for images, labels in batches:  # (B, 3, 224, 224) float32, (B,) int64
            seen += len(images)
            total += float(images.mean(dtype=np.float64)) * len(images)
        seconds = time.perf_counter() - start
        print(f"epoch {epoch}: {seen} images in {seconds:.2f} s, {seen / seconds:.0f} images/s, "
              f"mean {total / seen:+.4f}")
        start, seen, total = time.perf_counter(), 0, 0.0


if __name__ == "__main__":
    main()
