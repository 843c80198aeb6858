"""Reading what `shmpipe export NAME FILE.npz` wrote, whatever the dataset's shapes."""
from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Union

import numpy as np


class Export(NamedTuple):
    """An exported dataset: `images` is one `(N, H, W, C)` array when every image has one
    shape, else a list of `(H, W, C)` views into one buffer; `labels` int64 (-1: none);
    `paths` relative to the loaded folder; `classes` the class names, or None."""
    images: Union[np.ndarray, List[np.ndarray]]
    labels: np.ndarray
    paths: List[str]
    classes: Optional[List[str]]


def read_export(path: Union[str, os.PathLike]) -> Export:
    """The images, labels, paths and classes of an `.npz` made by `shmpipe export`.

    Images of one shape are its `images.npy`. Images of their own shapes (a dataset loaded with
    `--resize S`, say) are `pixels.npy`, every image's values one after the other, with
    `offsets.npy` (image `i` is `pixels[offsets[i]:offsets[i + 1]]`) and `shapes.npy` (each
    one's `H, W, C`): here each becomes a view of its own shape, no value copied. A file that
    does not hold them so raises ValueError."""
    with np.load(os.fspath(path), allow_pickle=False) as npz:
        members = set(npz.files)
        labels, paths = npz["labels"], [str(p) for p in npz["paths"]]
        classes = [str(c) for c in npz["classes"]] if "classes" in members else None
        if "images" in members:
            images: Union[np.ndarray, List[np.ndarray]] = npz["images"]
            count = len(images)
        elif {"pixels", "offsets", "shapes"} <= members:
            pixels, offsets, shapes = npz["pixels"], npz["offsets"], npz["shapes"]
            count = len(shapes)
            cut = (offsets.shape == (count + 1,) and shapes.shape == (count, 3)
                   and offsets.dtype.kind == "i" and shapes.dtype.kind == "i"
                   and pixels.ndim == 1 and bool((shapes > 0).all())
                   and offsets[0] == 0 and offsets[-1] == pixels.size
                   and (np.diff(offsets) == shapes.prod(axis=1)).all())
            if not cut:
                raise ValueError(f"{path}: its offsets and shapes do not cut its pixels into "
                                 "images")
            images = [pixels[offsets[i]:offsets[i + 1]].reshape(tuple(int(s) for s in shapes[i]))
                      for i in range(count)]
        else:
            raise ValueError(f"{path}: not an export of shmpipe (no images.npy, nor pixels.npy "
                             "with offsets.npy and shapes.npy)")
        if len(labels) != count or len(paths) != count:
            raise ValueError(f"{path}: {count} images but {len(labels)} labels and "
                             f"{len(paths)} paths")
    return Export(images, labels, paths, classes)
