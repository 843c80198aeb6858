"""Training batches in compiled code: `RandomResizedCrop` and `CenterCrop` make a whole batch
straight from a dataset's block into one fresh array (crop, resample, flip, normalise),
on threads, without the GIL; `Loader` iterates a dataset in batches with them, in this process.

The work is done by the shared library `libshmpipe_augment.so` (the `augment/` crate, a C ABI
called through ctypes, which releases the GIL for the call). It is looked for at
`$SHMPIPE_AUGMENT_LIB`, then beside this file, then in the build folders of a source checkout.

Randomness is per image: the crop and flip of image `i` in epoch `e` depend on `(seed, e, i)`
alone (SplitMix64, see `augment/src/rng.rs`), not on the batch, the thread or the process.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from . import _torch
from ._block import Block, BlockError, owner_of
from ._layout import _READY, MAGIC, SHM_DIR

_LIBRARY: Optional[ctypes.CDLL] = None


class _Params(ctypes.Structure):
    _fields_ = [
        ("out_height", ctypes.c_uint32),
        ("out_width", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("normalize", ctypes.c_uint32),
        ("filter", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("scale", ctypes.c_double * 2),
        ("ratio", ctypes.c_double * 2),
        ("fraction", ctypes.c_double),
        ("flip", ctypes.c_double),
        ("mean", ctypes.c_float * 4),
        ("std", ctypes.c_float * 4),
        ("seed", ctypes.c_uint64),
    ]


def _candidates() -> Iterator[str]:
    env = os.environ.get("SHMPIPE_AUGMENT_LIB")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libshmpipe_augment.so")
    checkout = os.path.dirname(os.path.dirname(here))
    for profile in ("release", "debug"):
        yield os.path.join(checkout, "target", profile, "libshmpipe_augment.so")


# The library's argument layout this package calls (augment/src/lib.rs, `ABI`).
_ABI = 2


def library() -> ctypes.CDLL:
    """The compiled batch maker, loaded once: the first library found built for this package's
    arguments (another build's would read its parameters wrong); RuntimeError naming each place
    looked at and what was there."""
    global _LIBRARY
    if _LIBRARY is not None:
        return _LIBRARY
    seen = []
    for path in _candidates():
        if not os.path.isfile(path):
            seen.append(f"{path} (none)")
            continue
        lib = ctypes.CDLL(path)
        abi = getattr(lib, "shmpipe_augment_abi", None)
        if abi is None:
            seen.append(f"{path} (not built for this package)")
            continue
        abi.restype = ctypes.c_uint64
        wanted = (_ABI << 32) | ctypes.sizeof(_Params)
        if abi() != wanted:
            seen.append(f"{path} (built for arguments {abi() >> 32}, this package calls {_ABI}: "
                        "rebuild it)")
            continue
        fn = lib.shmpipe_augment_batch
        fn.restype = ctypes.c_int32
        fn.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(_Params), ctypes.c_uint64,
                       ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p,
                       ctypes.c_char_p, ctypes.c_uint64]
        _LIBRARY = lib
        return lib
    raise RuntimeError("shmpipe's compiled augmentation (libshmpipe_augment.so) is not "
                       f"installed; looked at: {'; '.join(seen)}. Build it with `cargo build "
                       "--release -p shmpipe-augment`, or set SHMPIPE_AUGMENT_LIB")


def _pair(v: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    h, w = v
    return (int(h), int(w))


def _check_current(block: Block) -> np.ndarray:
    """The block's mapping, once sure it is still the dataset of its name, whole and ready: a
    batch of a dataset removed (`shmpipe rm`), loaded again under its name, cut short or
    overwritten raises BlockError rather than giving pixels of another dataset, or none."""
    whole = block._live()
    path = os.path.join(block.backing or SHM_DIR, block.name)
    what = f"{block.name}: cannot make a batch"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BlockError(f"{what}: the dataset was removed (see `shmpipe ls`)") from None
    if st.st_ino != block._inode:
        raise BlockError(f"{what}: it was removed and loaded again; attach to it again")
    assert block._mm is not None
    if block._mm.size() < len(whole):
        raise BlockError(f"{what}: its file is {block._mm.size()} bytes, shorter than the "
                         f"{len(whole)} mapped: damaged")
    if block.identity[1:] != (block._field("created_unix_ns"), block._field("history_count"),
                              block._field("python_writers")):
        raise BlockError(f"{what}: it changed since it was attached (`shmpipe apply`, or a "
                         "writable handle); attach to it again")
    if block._field("magic") != MAGIC or block._field("dataset_state") != _READY:
        raise BlockError(f"{what}: its header is no longer a ready dataset's: damaged")
    return whole


class _Augment:
    """What both crops share: the output size, the flip, the normalisation, the seed."""

    _mode = 0

    def __init__(self, size, flip, mean, std, seed, interpolation):
        self.size = _pair(size)
        if min(self.size) < 1:
            raise ValueError(f"size is (height, width), each at least 1, not {self.size}")
        if interpolation not in ("bilinear", "lanczos3"):
            raise ValueError("interpolation is bilinear (torchvision's default) or lanczos3")
        self.interpolation = interpolation
        self.flip = float(flip)
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip is a probability from 0 to 1, not {self.flip}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("a std of 0")
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next batches belong to: each epoch's crops and flips differ."""
        self.epoch = int(epoch)

    def _params(self, channels: int) -> _Params:
        p = _Params()
        p.out_height, p.out_width = self.size
        p.mode = self._mode
        p.flip = self.flip
        p.seed = self.seed & (2**64 - 1)
        p.filter = 0 if self.interpolation == "bilinear" else 1
        self._fill(p)
        if self.mean is not None:
            if len(self.mean) != channels or len(self.std) != channels:
                raise ValueError(f"mean and std need {channels} values, one per channel")
            p.normalize = 1
            for c in range(channels):
                p.mean[c], p.std[c] = self.mean[c], self.std[c]
        return p

    def _fill(self, p: _Params) -> None:
        raise NotImplementedError

    def batch(self, source, indices: Sequence[int], epoch: Optional[int] = None,
              threads: Optional[int] = None, boxes: bool = False,
              out: Optional[np.ndarray] = None):
        """Images `indices` of `source` (a `Dataset` or a `Block`) made into one fresh array:
        `(B, H, W, C)` uint8, or `(B, C, H, W)` float32 with `mean` and `std`. With `boxes`,
        also each image's `(top, left, height, width, flipped)` in its source, `(B, 5)` int64.
        `threads` defaults to the cores this process may use. `out`, a C-contiguous array of
        that shape and type, is written instead of a fresh one (and returned): pinned memory
        or shared memory for another process; a CPU tensor is written through its memory."""
        block = source.block if hasattr(source, "block") else source
        whole = _check_current(block)
        idx = self._indices(block, indices)
        offsets = np.ascontiguousarray(block._offsets[idx], dtype=np.int64)
        shapes = np.ascontiguousarray(block._shapes[idx], dtype=np.uint32)
        channels = int(shapes[0, 2]) if len(idx) else 3
        params = self._params(channels)
        shape, dtype = self._layout(len(idx), channels)
        given = out
        if out is None:
            out = np.empty(shape, dtype)
        elif not isinstance(out, np.ndarray) and hasattr(out, "numpy"):
            out = out.numpy()  # a CPU tensor's memory; a GPU tensor refuses
        if (out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous
                or not out.flags.writeable):
            raise ValueError(f"out is {out.dtype} {out.shape}; a writable C-contiguous {np.dtype(dtype)} "
                             f"{shape} is needed")
        made = np.empty((len(idx), 5), np.int64)
        if threads is None:
            threads = len(os.sched_getaffinity(0))
        err = ctypes.create_string_buffer(512)
        # The handle's index seeds the stream (with a partial handle, the i-th image that loaded).
        dataset_index = np.ascontiguousarray(idx, dtype=np.int64)
        code = library().shmpipe_augment_batch(
            whole.ctypes.data, len(whole), offsets.ctypes.data, shapes.ctypes.data,
            dataset_index.ctypes.data, len(idx), ctypes.byref(params),
            self.epoch if epoch is None else int(epoch), out.ctypes.data, out.nbytes,
            max(1, int(threads)), made.ctypes.data, err, len(err))
        if code != 0:
            raise BlockError(f"{block.name}: {err.value.decode('utf-8', 'replace')}")
        # Whatever happened to the block during the call (a damaged one raises here).
        _check_current(block)
        result = out if given is None else given
        return (result, made) if boxes else result

    @staticmethod
    def _indices(block: Block, indices: Sequence[int]) -> np.ndarray:
        given = np.asarray(indices).reshape(-1)
        if given.size and given.dtype.kind not in "iu":
            # NumPy and torch refuse a float or bool as an index: so does a batch, rather than
            # give image 0 for 0.5.
            raise TypeError(f"{block.name}: indices are integers, not {given.dtype}")
        n = len(block)
        if given.dtype.kind == "u" and given.size and given.max() > np.iinfo(np.int64).max:
            raise IndexError(f"{block.name}: an index outside its {n} images")
        idx = given.astype(np.int64)
        if ((idx < -n) | (idx >= n)).any():
            raise IndexError(f"{block.name}: an index outside its {n} images")
        return np.where(idx < 0, idx + n, idx)

    def _layout(self, n: int, channels: int):
        """The shape and type of a batch of `n` images of `channels`."""
        h, w = self.size
        if self.mean is not None:
            return (n, channels, h, w), np.float32
        return (n, h, w, channels), np.uint8

    def shape(self, source, indices: Sequence[int]):
        """The shape and NumPy type `batch` gives for these images: for an `out` made ahead."""
        block = source.block if hasattr(source, "block") else source
        idx = self._indices(block, indices)
        return self._layout(len(idx), int(block._shapes[idx[0], 2]) if len(idx) else 3)

    def collate(self, items):
        """A `collate_fn` for `DataLoader(dataset, collate_fn=aug.collate)` over a `Dataset`
        without transform: `(images, labels)`, the images made by `batch` in this epoch; tensors
        when the program imported torch (the DataLoader's `pin_memory` then pins them)."""
        items = list(items)
        views = [item[0] for item in items]
        labels = np.asarray([item[1] for item in items], dtype=np.int64)
        block = owner_of(views[0]) if views else None
        indices = None if block is None else block._indices_of(views)
        if indices is None:
            raise TypeError("collate: the items are not a shmpipe Dataset's own views (a "
                            "Dataset without transform)")
        images = self.batch(block, indices, threads=1)
        if _torch.wanted(None):
            return _torch.tensor(images), _torch.tensor(labels)
        return images, labels


class RandomResizedCrop(_Augment):
    """torchvision's `RandomResizedCrop(size, scale, ratio)` with `RandomHorizontalFlip(flip)`
    and, given `mean` and `std`, `ToTensor()` and `Normalize(mean, std)`: the crop's box drawn
    as torchvision's `get_params` draws it, resampled with antialiased bilinear as torchvision
    (on a PIL image: Pillow's filter) or `interpolation="lanczos3"`."""

    _mode = 0

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: float = 0.5,
                 mean=None, std=None, seed: int = 0, interpolation: str = "bilinear"):
        super().__init__(size, flip, mean, std, seed, interpolation)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not (0 < self.scale[0] <= self.scale[1]) or not (0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError("scale and ratio are (low, high) with 0 < low <= high")

    def _fill(self, p: _Params) -> None:
        p.scale[0], p.scale[1] = self.scale
        p.ratio[0], p.ratio[1] = self.ratio


class CenterCrop(_Augment):
    """Validation's crop: the centred box of the output's aspect ratio whose shorter side is
    `fraction` of the image's (0.875 is `Resize(256)` then `CenterCrop(224)`), resampled to
    `size`; no flip unless asked."""

    _mode = 1

    def __init__(self, size, fraction: float = 0.875, flip: float = 0.0, mean=None, std=None,
                 seed: int = 0, interpolation: str = "bilinear"):
        super().__init__(size, flip, mean, std, seed, interpolation)
        if not 0 < fraction <= 1:
            raise ValueError("fraction is above 0 and at most 1")
        self.fraction = float(fraction)

    def _fill(self, p: _Params) -> None:
        p.fraction = self.fraction


class Loader:
    """Batches of a `Dataset` (or `Block`) made in this process by `augment`, on its own
    threads: no worker process, no pickling. `for images, labels in Loader(ds, aug, 64)`;
    call `set_epoch(e)` before each epoch (it reshuffles and draws new crops).

    Batches are torch tensors when the program has imported torch (`tensors=None`), else NumPy
    arrays; `tensors=True` or `False` decides. A tensor shares its array's memory: no copy.
    `pin_memory=True` makes each batch in pinned memory, for `.to("cuda", non_blocking=True)`;
    with no accelerator it warns and does not pin, as torch's DataLoader does. Each pinned
    batch comes from torch's pinned-memory cache, which gives a block again only once the
    copies made from it are done.

    `sampler`, any iterable of indices with a length (torch's `DistributedSampler(ds)` for one
    rank of a distributed training, say), gives each epoch's order instead of `shuffle`; its
    `set_epoch`, when it has one, is called by this loader's.

    A fresh array costs the kernel zeroing its pages, a third of the work, so the loader keeps
    up to three batch arrays, from one epoch to the next, and writes a batch into one once
    nothing but the loader holds it (CPython's reference count says so: no variable, view or
    tensor of the program's is left on it); a short last batch takes the first images of one.
    A batch the program keeps is never written again.

    `recycle=N` (0: off) writes batch k + N into batch k's array whether or not it is held: only
    for a loop that is done with a batch before it asks for the N-th next (a batch kept longer
    is overwritten), and never under an asynchronous copy from pinned memory still in flight."""

    def __init__(self, source, augment: _Augment, batch_size: int = 64, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, threads: Optional[int] = None,
                 sampler=None, recycle: int = 0, tensors: Optional[bool] = None,
                 pin_memory: bool = False):
        self.source = source
        self.augment = augment
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size is at least 1, not {self.batch_size}")
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.threads = threads
        self.sampler = sampler
        self.recycle = max(0, int(recycle))
        self.tensors = tensors
        self.pin_memory = bool(pin_memory)
        self.epoch = 0
        # Full batches' arrays, each written again once nothing else holds it; kept from one
        # epoch to the next, so that an epoch starts on pages already there.
        self._pool: list = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.augment.set_epoch(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _block(self) -> Block:
        return self.source.block if hasattr(self.source, "block") else self.source

    def __len__(self) -> int:
        n = len(self._block()) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        block = self._block()
        if self.sampler is not None:
            order = np.fromiter((int(i) for i in self.sampler), dtype=np.int64)
        elif self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(block))
        else:
            order = np.arange(len(block))
        n = len(order)
        labels = block.labels
        pin = self.pin_memory and _torch.can_pin()
        tensors = pin or _torch.wanted(self.tensors)
        made = []  # with `recycle`: the first full batches, written again in turn
        pool = self._pool
        for k, start in enumerate(range(0, n, self.batch_size)):
            idx = order[start:start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                return
            full = len(idx) == self.batch_size
            recycled = full and len(made) == self.recycle > 0
            out = made[k % self.recycle] if recycled else None
            pooled = not pin and self.recycle == 0
            if out is None and pin:
                out = _torch.pinned(*self.augment.shape(block, idx))[1]
            elif pooled:
                # A free array of a full batch's shape; a shorter batch takes its first images.
                shape, dtype = self.augment.shape(block, order[:self.batch_size])
                pool[:] = [a for a in pool if a.shape == shape and a.dtype == dtype]
                out = _unheld(pool)
                out = out if out is None or full else out[:len(idx)]
            images = self.augment.batch(block, idx, epoch=self.epoch, threads=self.threads,
                                        out=out)
            if full and not recycled and len(made) < self.recycle:
                made.append(images)
            if pooled and full and out is None:
                # Every pooled array is held (none was free): the oldest gives way.
                pool[:] = (pool + [images])[-_POOL:]
            targets = (np.full(len(idx), -1, np.int64) if labels is None
                       else np.asarray(labels[idx], dtype=np.int64))
            if tensors:
                images = images if pin else _torch.tensor(images)
                targets = _torch.tensor(targets)
                targets = targets.pin_memory() if pin else targets
            yield images, targets
            # This frame's own references, which would otherwise count as the program's.
            images = targets = out = None


# The most arrays a loader keeps for reuse: the batch the program holds, the one being made,
# and one more for a program that keeps the previous batch a step longer.
_POOL = 3


def _unheld(pool: list) -> Optional[np.ndarray]:
    """An array of `pool` that nothing but the pool holds, or None. The count such an array
    shows is read off an object held by a list alone, looked at the same way: what a loop
    variable and `getrefcount`'s argument add differs between Python versions (3.14 may borrow
    them), while anything of the program's (a variable, a view's base, a tensor's storage)
    always adds one."""
    for probe in [object()]:
        alone = sys.getrefcount(probe)
    for array in pool:
        if sys.getrefcount(array) == alone:
            return array
    return None
