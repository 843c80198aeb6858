"""`Dataset`: a map-style dataset over an attached block, as a data loader wants one."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ._block import Block, attach


class Dataset:
    """`len(ds)` images; `ds[i]` is `(image, label)`: the `(H, W, C)` uint8 view of image `i`
    (or `transform(view)`) and its class index (-1 when the dataset has no labels).

    Usable as is by `torch.utils.data.DataLoader` (the package does not import torch). The block
    is attached when first used, in the process that uses it; pickling a `Dataset` (as a data
    loader does for each worker under spawn or forkserver) sends its name and transform, never
    pixels, and the worker attaches by name.

    Views are read-only: a transform that changes pixels must copy first (`np.array(view)`).

    A dataset holding images that failed at load is refused unless `partial=True`; then it
    holds only the images that loaded, as `shmpipe export --partial` writes them: `len(ds)`
    counts them, `ds[i]` is the i-th of them with its own label, and a failed image is never
    given (`ds.block.failed` maps each one's source path to its reason).

    Without a transform, give the loader `collate_fn=shmpipe.collate`: each batch then goes from
    the worker to the training process as the block's name and the images' indices, and the
    training process copies the images out of the block (see `shmpipe.collate`). A transform's
    outputs are not in the block: they travel with their pixels, whichever collate_fn.

    Once the pixels are shared, starting the workers is most of an epoch. Under forkserver, name
    the modules the workers need (`ctx = multiprocessing.get_context("forkserver");
    ctx.set_forkserver_preload(["torch", "shmpipe"])`, then `multiprocessing_context=ctx`):
    Python 3.10 to 3.13 never preload the main module's imports as they mean to, so each worker
    imports torch again, every epoch. `persistent_workers=True` keeps the workers, which hold
    nothing but the block's name, from one epoch to the next.
    """

    def __init__(self, name: str, transform: Optional[Callable[[np.ndarray], Any]] = None,
                 partial: bool = False, backing: Optional[Union[str, os.PathLike]] = None):
        self.name = name
        self.transform = transform
        self.partial = partial
        self.backing = None if backing is None else os.fspath(backing)
        self._block: Optional[Block] = None
        self._pid = -1
        self.block  # attach now, so a missing or unready dataset is reported here

    @property
    def block(self) -> Block:
        """The attached block; attached again after a fork (the child's own lock and mapping)."""
        if self._block is None or self._pid != os.getpid():
            self._block = attach(self.name, partial=self.partial, backing=self.backing)
            self._pid = os.getpid()
        return self._block

    def __len__(self) -> int:
        return len(self.block)

    def __getitem__(self, i: int) -> Tuple[Any, int]:
        block = self.block
        image = block.images[i]
        label = -1 if block.labels is None else int(block.labels[i])
        return (image if self.transform is None else self.transform(image)), label

    @property
    def classes(self) -> Optional[List[str]]:
        """The class names, in label order (None without labels), as torchvision's
        `ImageFolder.classes`."""
        return self.block.classes

    @property
    def class_to_idx(self) -> Dict[str, int]:
        """Each class name's label, as `ImageFolder.class_to_idx` ({} without labels)."""
        return {name: i for i, name in enumerate(self.block.classes or [])}

    @property
    def targets(self) -> List[int]:
        """Each image's label (-1 without labels), as `ImageFolder.targets`: what samplers that
        balance classes read."""
        labels = self.block.labels
        return [-1] * len(self) if labels is None else labels.tolist()

    @property
    def samples(self) -> List[Tuple[str, int]]:
        """`(source path, label)` for each image, the path under the folder it was loaded from,
        as `ImageFolder.samples` (also `imgs`)."""
        block = self.block
        return [(os.path.join(block.root, path), label)
                for path, label in zip(block.paths, self.targets)]

    imgs = samples

    def close(self) -> None:
        if self._block is not None:
            self._block.close()
            self._block = None

    def __reduce__(self):
        return (Dataset, (self.name, self.transform, self.partial, self.backing))

    def __repr__(self) -> str:
        return f"<shmpipe.Dataset {self.name}>"
