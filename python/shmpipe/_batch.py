"""`collate` and `Batch`: batches that go from a data-loader worker to the training process as a
reference to images of a block (its name and the images' indices), not as pixels.

A worker that stacks its batch and pickles it through a pipe copies every pixel twice (the stack,
the pickle), and the receiver copies it again out of the pipe. The pixels are in the block
already: `collate` sends the block's name and the indices, and the process that uses the batch
copies the images out of its own mapping of the block, with one gather.
"""
from __future__ import annotations

import sys
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _torch
from ._block import BlockError, attach, open_handle, owner_of

Images = Union[np.ndarray, List[np.ndarray]]
# Where a reference batch's images are: (block name, backing folder, partial, block identity,
# image indices).
_Source = Tuple[str, Optional[str], bool, Tuple[int, int, int, int], np.ndarray]


class Batch:
    """Images and their labels; unpacks as `images, labels`, as a default-collated batch does.

    `images` is a fresh `(B, H, W, C)` uint8 array, or a list of fresh `(H, W, C)` arrays when
    the images differ in shape; never a view of a block, so it stays valid whatever happens to
    the block later. `labels` is the items' labels as one array (int64 from a `Dataset`, -1
    where it has none), or None when the items had no labels.

    A batch that `collate` made from a block's own views holds only the block's name and the
    images' indices, and pickles as them (a few hundred bytes whatever the images' size). Its
    images are copied out of the block when first asked for, in the process that asks; if the
    block is gone, not ready, or no longer the one the batch was made from (removed and loaded
    again, changed by `shmpipe apply`, or attached by a writable handle), that raises
    `BlockError` instead.

    Unpacked (`images, labels = batch`), a batch gives torch tensors over the same memory when
    the program has imported torch, else the arrays; `.images` and `.labels` are always the
    arrays. A DataLoader with `pin_memory=True` calls `pin_memory()`, which gives the pair as
    pinned tensors.
    """

    __slots__ = ("_images", "_labels", "_source")

    def __init__(self, images: Images, labels: Optional[np.ndarray] = None):
        self._images: Optional[Images] = images
        self._labels = labels
        self._source: Optional[_Source] = None

    @property
    def images(self) -> Images:
        if self._images is None:
            assert self._source is not None
            self._images = _gather(self._source)
        return self._images

    @property
    def labels(self) -> Optional[np.ndarray]:
        return self._labels

    @property
    def name(self) -> Optional[str]:
        """The block the images are gathered from; None when the batch carries its pixels."""
        return None if self._source is None else self._source[0]

    @property
    def indices(self) -> Optional[np.ndarray]:
        """The images' indices in that block; None when the batch carries its pixels."""
        return None if self._source is None else self._source[4]

    def __len__(self) -> int:
        return 2

    def _pair(self) -> Tuple[Any, Any]:
        images, labels = self.images, self.labels
        if not _torch.wanted(None):
            return images, labels
        images = (_torch.tensor(images) if isinstance(images, np.ndarray)
                  else [_torch.tensor(image) for image in images])
        return images, None if labels is None else _torch.tensor(labels)

    def __getitem__(self, k: int) -> Any:
        return self._pair()[k]

    def __iter__(self) -> Iterator[Any]:
        yield from self._pair()

    def pin_memory(self, device=None) -> Tuple[Any, Any]:
        """The images and labels as pinned tensors (torch's DataLoader calls this when asked to
        pin, which it does only with an accelerator)."""
        images, labels = self.images, self.labels
        if isinstance(images, np.ndarray):
            images = _torch.tensor(images).pin_memory()
        else:
            images = [_torch.tensor(image).pin_memory() for image in images]
        return images, None if labels is None else _torch.tensor(labels).pin_memory()

    def __reduce__(self):
        if self._source is not None:
            return (_reference, (*self._source, self._labels))
        return (Batch, (self._images, self._labels))

    def __repr__(self) -> str:
        if self._source is not None:
            return f"<shmpipe.Batch of {len(self._source[4])} images of {self._source[0]}>"
        return f"<shmpipe.Batch of {len(self._images or [])} images>"


def _reference(name: str, backing: Optional[str], partial: bool, identity: Tuple[int, int, int, int],
               indices: np.ndarray, labels: Optional[np.ndarray]) -> Batch:
    """A batch of images `indices` of the block `name`, to be gathered when first used."""
    batch = Batch.__new__(Batch)
    batch._images = None
    batch._labels = labels
    batch._source = (name, backing, partial, tuple(identity), np.asarray(indices, dtype=np.int64))
    return batch


def _gather(source: _Source) -> Images:
    """Copies a reference batch's images out of its block: through a handle this process holds
    on that very block when there is one, else through a handle attached for the gather (which
    checks, under the block's lock, that the block is still ready and still the same)."""
    name, backing, partial, identity, indices = source
    block = open_handle(name, backing, identity)
    if block is not None:
        return block.take(indices)
    what = f"cannot gather a batch of {len(indices)} images from {name}"
    try:
        block = attach(name, partial=partial, backing=backing)
    except BlockError as e:
        raise BlockError(f"{what}: {e}") from None
    try:
        if block.identity[:2] != identity[:2]:
            raise BlockError(f"{what}: it was removed and made again after the batch was made; "
                             "its images are not the batch's")
        if block.identity[2] != identity[2]:
            raise BlockError(f"{what}: `shmpipe apply` changed it after the batch was made; its "
                             "images are not the batch's")
        if block.identity != identity:
            raise BlockError(f"{what}: a writable Python handle attached to it after the batch "
                             "was made; its images may not be the batch's")
        return block.take(indices)
    finally:
        block.close()


def collate(items: Sequence[Any]) -> Batch:
    """Makes one `Batch` of `items`: `(image, label)` pairs as `Dataset` gives them, or bare
    images. For `torch.utils.data.DataLoader(ds, collate_fn=shmpipe.collate, ...)`.

    When every image is one image's whole view of a block (a `Dataset` without transform, or
    `handle.images[i]` of a read-only handle), the batch is a reference: the worker sends the
    block's name and the indices, no pixel, and the receiving process gathers the images from
    the block. Any other image (the output of a transform, a view of a writable handle) is
    copied into the batch, which then carries its pixels; images must be NumPy arrays.
    """
    items = list(items)
    if not items:
        raise ValueError("shmpipe.collate: an empty batch")
    labels: Optional[np.ndarray] = None
    if all(isinstance(item, tuple) and len(item) == 2 for item in items):
        images = [item[0] for item in items]
        labels = np.asarray([item[1] for item in items])
    else:
        images = items
    block = owner_of(images[0])
    indices = None if block is None else block._indices_of(images)
    if block is not None and indices is not None:
        return _reference(block.name, block.backing, block.partial, block.identity, indices, labels)
    if "torch" in sys.modules and isinstance(images[0], sys.modules["torch"].Tensor):
        # A transform that makes tensors (torchvision's ToTensor): torch's own collation.
        from torch.utils.data import default_collate
        return default_collate(items)
    for k, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"shmpipe.collate: item {k}'s image is a {type(image).__name__}, not a "
                            "NumPy array or a torch tensor")
    if all(image.shape == images[0].shape and image.dtype == images[0].dtype for image in images):
        return Batch(np.stack(images), labels)
    return Batch([np.array(image) for image in images], labels)
