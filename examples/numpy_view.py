#!/usr/bin/env python3
"""A dataset kept by `shmpipe load`, read from NumPy by name, with no copy.

    shmpipe load assets/ --name photos --resize 224x224 --fit cover
    python3 examples/numpy_view.py photos
    shmpipe rm photos

Needs NumPy and the package (`pip install ./python`). Run by tests/integration/cli.rs (README's
commands) and tests/integration/python_loader.rs (under every Python of SHMPIPE_PYTHONS).
"""
import sys

import shmpipe


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "photos"
    # A read-only handle: it holds the block's lock shared, so `shmpipe apply` waits its turn.
    with shmpipe.attach(name) as ds:
        print(f"{ds.name}: {len(ds)} images, shape {ds.shape}, {ds.dtype}")
        x = ds.array                          # (N, H, W, C) view of the block: no pixel copied
        mean = x.mean(axis=(0, 1, 2))         # reads the shared pages in place
        print("mean per channel:", " ".join(f"{m:.1f}" for m in mean))
        for i in range(min(3, len(ds))):
            width, height = ds.original_sizes[i]   # the source's size, before --resize
            print(f"  [{i}] {ds.paths[i]}: {ds.format(i)} {width}x{height} -> {ds.images[i].shape}")


if __name__ == "__main__":
    main()
