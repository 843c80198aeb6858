"""Attaching to a block: open, check, lock, map, and the lazy views over its pixels.

The layout it reads is `_layout`'s (a mirror of block/src/layout.rs); a writable handle's mark
and the fork hook that protects it are `_editmark`'s. This module never unlinks a block and
never hands it to Python's resource tracker (it does not use `multiprocessing.shared_memory`).
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
import time
import weakref
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union, overload

import numpy as np

from ._editmark import _EditMark
from ._layout import (_ALIGN, _DONE, _HEADER, _LABEL_AT, _MESSAGE_LEN, _NOT_READY, _READY,
                      _RECORD, FLAG_COPY, FLAG_KEPT, FORMATS, HEADER_SIZE, IMAGE_RECORD_SIZE,
                      LAYOUT_VERSION, MAGIC, NAME_PREFIX, SHM_DIR, _bad_records)

# `ls`, `clean` and a run's sweep probe a block's lock for a moment: wait that long before "busy".
_LOCK_PATIENCE_S = 0.5


# Every block attached in this process and not yet closed, by the address its mapping starts at:
# how `collate` tells that an array is an image's own view of a block, and which. Weak, so that
# it keeps no handle (nor its lock) alive.
_MAPPED: "weakref.WeakValueDictionary[int, Block]" = weakref.WeakValueDictionary()


class BlockError(Exception):
    """The name does not hold a dataset this process may attach to; the message says why and
    what to do."""


def full_name(name: str) -> str:
    """`faces` -> `shmpipe-faces`; a full name is kept."""
    return name if name.startswith(NAME_PREFIX) else NAME_PREFIX + name


def _lock_holders(fd: int) -> List[Tuple[str, int]]:
    """Who holds a flock on the file behind `fd`, from /proc/locks: (READ or WRITE, pid) each.
    A lock inherited across fork counts once. Empty where /proc is not there."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = []
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 4242 00:19:1234 0 EOF"; waiters have "->" after the id.
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
                    holders.append((fields[3], int(fields[4])))
    except OSError:
        pass
    return holders


def busy_reason(fd: int, writable: bool) -> str:
    """Why a lock on the block was refused, naming the holders when /proc/locks shows them."""
    holders = _lock_holders(fd)
    writers = [pid for kind, pid in holders if kind == "WRITE"]
    readers = [pid for kind, pid in holders if kind == "READ"]
    if writers:
        return (f"busy: a writer holds it (pid {writers[0]}: a shmpipe run, load, apply or repair, "
                "or a writable Python handle); try again when it ends")
    if readers:
        readers = sorted(set(readers))
        pids = ", ".join(str(p) for p in readers[:8]) + (", ..." if len(readers) > 8 else "")
        return (f"busy: {len(readers)} process(es) attached to read it (pids {pids}: a save, an "
                "export or Python handles); close them first")
    what = "a writer holds it" if not writable else "a process holds it"
    return f"busy: {what}; try again when it ends"


class _Paths(Sequence[str]):
    """Source paths, relative to the loaded folder; each is decoded when asked for."""

    def __init__(self, block: "Block"):
        self._block = block

    def __len__(self) -> int:
        return len(self._block)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> List[str]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._block._path(i)


class _Images(Sequence[np.ndarray]):
    """One `(H, W, C)` uint8 view per image, made when asked for: nothing per image is built
    up front."""

    def __init__(self, block: "Block"):
        self._block = block

    def __len__(self) -> int:
        return len(self._block)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> List[np.ndarray]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._block._image(i)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]


class Block:
    """One attached dataset. See `shmpipe.attach`."""

    def __init__(self, name: str, writable: bool = False, partial: bool = False,
                 backing: Optional[str] = None):
        self.name = full_name(name)
        self.writable = bool(writable)
        self.partial = bool(partial)
        self.backing = backing
        self._mm: Optional[mmap.mmap] = None
        self._edit: Optional[_EditMark] = None
        self._whole: Optional[np.ndarray] = None
        self._array: Optional[np.ndarray] = None
        self._uniform: Optional[Tuple[int, int, int]] = None
        path = os.path.join(backing or SHM_DIR, self.name)
        flags = (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise BlockError(f"no dataset named {self.name} in {backing or SHM_DIR} (see `shmpipe ls`)") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise BlockError(f"{self.name} is not ours: a symbolic link") from None
            raise BlockError(f"cannot open {path}: {e.strerror}") from None
        try:
            self._attach(fd)
        finally:
            # The mapping keeps a duplicate of the descriptor, and with it the lock: both live
            # exactly as long as the mapping, which lives as long as any view of it.
            os.close(fd)

    def _attach(self, fd: int) -> None:
        st = os.fstat(fd)
        self._inode = st.st_ino
        # As shmpipe does: only a regular file of this user's, nothing placed there by another.
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise BlockError(f"{self.name} is not ours: not a regular file owned by uid {os.geteuid()}")
        if st.st_size < HEADER_SIZE:
            raise BlockError(f"{self.name} is not ready: {st.st_size} bytes, smaller than a header")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if self.writable else 0)
        self._mm = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED, prot=prot)
        try:
            self._check_kind(st.st_size)
            self._lock(fd)
            self._read(fd, st.st_size)
        except BaseException:
            self._release()
            raise

    def _lock(self, fd: int) -> None:
        how = (fcntl.LOCK_EX if self.writable else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + _LOCK_PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, how)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BlockError(f"{self.name} is {busy_reason(fd, self.writable)}") from None
                time.sleep(0.005)

    def _field(self, key: str) -> int:
        offset, fmt = _HEADER[key]
        return struct.unpack_from(fmt, self._mm, offset)[0]

    def _check_kind(self, size: int) -> None:
        """What the block is: fields its creator writes before anyone can lock it."""
        if self._field("magic") != MAGIC:
            raise BlockError(f"{self.name} is not a shmpipe block")
        version = self._field("layout_version")
        if version != LAYOUT_VERSION or self._field("header_size") != HEADER_SIZE:
            raise BlockError(f"{self.name} has layout version {version}, this package reads "
                             f"{LAYOUT_VERSION}: use the shmpipe package of the same release")
        if self._field("total_size") != size or self._field("image_record_size") != IMAGE_RECORD_SIZE:
            raise BlockError(f"{self.name}: sizes do not match this package's layout")
        flags = self._field("flags")
        if flags & FLAG_COPY:
            raise BlockError(f"{self.name} is a copy-mode block: it holds no pixels")
        if not flags & FLAG_KEPT:
            raise BlockError(f"{self.name} {_NOT_READY[0]}")

    def _read(self, fd: int, size: int) -> None:
        """The rest, under the lock: no shmpipe writer changes it meanwhile.

        Every bound is checked before anything is read through it, as block/src/
        validate.rs does: the header's fields are Python integers (no wrap), and the records'
        columns go through `_bad_records`, whose arithmetic cannot wrap either."""
        state = self._field("dataset_state")
        if state != _READY:
            why = _NOT_READY.get(state, "has an unknown dataset state")
            raise BlockError(f"{self.name} {why.format(short=self.name[len(NAME_PREFIX):])}")
        count = self._field("image_count")
        table = self._field("image_table_offset")
        self._strings, strings_len = self._field("strings_offset"), self._field("strings_len")
        pixels, pixels_len = self._field("pixels_offset"), self._field("pixels_len")
        channels = self._field("channels")
        if (table + count * IMAGE_RECORD_SIZE > size or self._strings + strings_len > size
                or pixels + pixels_len > size or pixels % _ALIGN):
            raise BlockError(f"{self.name}: a region runs past the end of the block or is misaligned")
        if channels not in (1, 3, 4):
            raise BlockError(f"{self.name}: {channels} channels per pixel (a dataset has 1, 3 or 4)")
        # One NumPy array over the whole table, its columns copied once: what was checked is what
        # is used, and nothing is built per image.
        records = np.frombuffer(self._mm, _RECORD, count=count, offset=table)
        slot_offsets = records["slot_offset"].copy()
        slot_lens = records["slot_len"].copy()
        heights, widths = records["height"].copy(), records["width"].copy()
        source = np.stack([records["source_offset"], records["source_len"]], axis=1)
        bad = _bad_records(slot_offsets, slot_lens, heights, widths, records["channels"],
                           source[:, 0], source[:, 1], pixels_len, strings_len, channels)
        if bad.any():
            i = int(np.argmax(bad))
            why = (f"{self.name}: image {i}'s record is out of bounds, misaligned, overlaps another "
                   f"or does not match its shape (slot offset {int(slot_offsets[i])}, "
                   f"{int(slot_lens[i])} bytes, {int(heights[i])}x{int(widths[i])}x"
                   f"{int(records['channels'][i])}, in {pixels_len} bytes of pixels; source path "
                   f"at {int(source[i, 0])}, {int(source[i, 1])} bytes, in {strings_len}); the "
                   "block is damaged: `shmpipe rm` it and load it again")
            del records  # its buffer export would keep the mapping, and the lock, after the error
            raise BlockError(why)
        # Checked: every offset and length is at most the block's size, below 2**63.
        status = records["status"] & 0xFF
        failed = np.nonzero(status != _DONE)[0]
        failed_messages = [
            bytes(records["message"][i][: min(int(records["message_len"][i]), _MESSAGE_LEN)]).decode("utf-8", "replace")
            for i in failed
        ]
        records_formats = records["format"].copy()
        # (width, height) of each source as decoded, EXIF orientation applied, before any resize.
        original_sizes = np.stack([records["original_width"], records["original_height"]], axis=1).astype(np.int64)
        del records  # its buffer export would keep close() from unmapping
        self._whole = np.frombuffer(self._mm, np.uint8)
        self._whole.flags.writeable = self.writable
        source = source.astype(np.int64)
        # Source paths of the failed images, read by their (checked) place in the strings.
        failed_paths = [self._text(int(source[i, 0]), int(source[i, 1])) for i in failed]
        if len(failed) and not self.partial:
            raise BlockError(f"{self.name} holds {len(failed)} image(s) that failed at load, with no "
                             f"pixels (the first: {failed_paths[0]}: {failed_messages[0]}); "
                             "attach(name, partial=True) gives the others, `failed` lists them")
        # The images this handle gives, by their index in the block: all of them, or with
        # `partial` those that loaded (a failed image's slot holds no picture). Every index of this
        # handle (images, paths, labels, formats, sizes, `take`, a collated batch) is an index
        # into this list, as `shmpipe export --partial` numbers the images it writes.
        kept = np.nonzero(status == _DONE)[0] if len(failed) else np.arange(count)
        self.failed: Dict[str, str] = dict(zip(failed_paths, failed_messages))
        self._count = len(kept)
        self._offsets = slot_offsets.astype(np.int64)[kept] + pixels
        self._shapes = np.stack([heights, widths, np.full(count, channels, np.uint32)],
                                axis=1).astype(np.int64)[kept]
        self._source = source[kept]
        if self._count and (self._shapes == self._shapes[0]).all():
            h, w, c = (int(v) for v in self._shapes[0])
            self._uniform = (h, w, c)
            steps = np.diff(self._offsets)
            stride = int(steps[0]) if self._count > 1 else h * w * c
            if self._count == 1 or (steps == stride).all():
                # Slots are 64-byte aligned: a strided view covers them all without a copy.
                self._array = np.lib.stride_tricks.as_strided(
                    self._whole[int(self._offsets[0]):], (self._count, h, w, c), (stride, w * c, c, 1),
                    writeable=self.writable)
        self._formats = records_formats[kept]
        self._sorted_offsets: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self._base = int(self._whole.__array_interface__["data"][0])
        self.original_sizes: np.ndarray = original_sizes[kept]
        self.labels: Optional[np.ndarray] = None
        self.classes: Optional[List[str]] = None
        root, root_len = self._field("input_root_offset"), self._field("input_root_len")
        if root + root_len > strings_len:
            raise BlockError(f"{self.name}: its input folder's name is out of bounds")
        start = self._strings + root
        # The folder the dataset was loaded from, as the loader resolved it: `paths` are
        # relative to it.
        self.root: str = bytes(self._mm[start : start + root_len]).decode("utf-8", "surrogateescape")
        if self._field("label_kind") != 0:
            self.classes = self._class_names(strings_len)
            labels = np.frombuffer(self._mm, np.int64, count=(count - 1) * (IMAGE_RECORD_SIZE // 8) + 1,
                                   offset=table + _LABEL_AT)[:: IMAGE_RECORD_SIZE // 8] if count else np.empty(0, np.int64)
            if count and ((labels < 0) | (labels >= len(self.classes))).any():
                raise BlockError(f"{self.name}: a label is out of range of its {len(self.classes)} classes")
            if len(kept) != count:
                labels = labels[kept]
            labels.flags.writeable = False
            self.labels = labels
        if self.writable:
            # Counted before any write can happen, under the exclusive lock: what this handle
            # writes is in no history step, and a batch made before must not pass for after.
            offset, fmt = _HEADER["python_writers"]
            struct.pack_into(fmt, self._mm, offset, self._field("python_writers") + 1)
            self._edit = _EditMark(fd, self._mm, self._base, size)
            weakref.finalize(self._mm, self._edit.end)
            self._edit.set()
        # What a reference to images of this block must match when it is used: the same file,
        # made at the same time, with no step applied and no writable handle attached since.
        self._made = (self._field("created_unix_ns"), self._field("history_count"),
                      self._field("python_writers"))
        _MAPPED[self._base] = self

    def _class_names(self, strings_len: int) -> List[str]:
        offset, length = self._field("class_names_offset"), self._field("class_names_len")
        if offset + length > strings_len:
            raise BlockError(f"{self.name}: its class names are out of bounds")
        start = self._strings + offset
        raw = bytes(self._mm[start : start + length])
        names = raw.split(b"\0")[:-1] if raw else []
        if len(names) != self._field("class_count"):
            raise BlockError(f"{self.name}: {len(names)} class names for {self._field('class_count')} classes")
        return [n.decode("utf-8", "surrogateescape") for n in names]

    def format(self, i: int) -> str:
        """Image `i`'s source format: png, jpeg, webp, gif, bmp or tiff."""
        code = int(self._formats[self._index(i)])
        return FORMATS[code % len(FORMATS)]

    @property
    def identity(self) -> Tuple[int, int, int, int]:
        """(inode, creation time, steps applied, writable handles attached) of the block as
        attached: a block removed and loaded again under the same name, changed by `shmpipe
        apply`, or attached by a writable handle since, has another."""
        return (self._inode, *self._made)

    def take(self, indices: Sequence[int]) -> Union[np.ndarray, List[np.ndarray]]:
        """Copies images `indices` out of the block, with one gather: a fresh `(B, H, W, C)`
        array when every image has one shape, else a list of fresh `(H, W, C)` arrays. Nothing
        returned is a view: it stays valid whatever happens to the block or the handle later."""
        self._live()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        outside = (idx < -self._count) | (idx >= self._count)
        if outside.any():
            raise IndexError(f"{self.name}: image {int(idx[np.argmax(outside)])} of {self._count}")
        idx = np.where(idx < 0, idx + self._count, idx)
        if self._array is not None:
            # Fancy indexing, not np.take: take copies a strided (padded) array whole first.
            return self._array[idx]
        if self._uniform is not None:
            # One shape, slots not evenly spaced (a partial handle's failed images between).
            out = np.empty((len(idx), *self._uniform), np.uint8)
            for k, i in enumerate(idx):
                out[k] = self._image(int(i))
            return out
        return [np.array(self._image(int(i))) for i in idx]

    def _indices_of(self, views: Sequence[np.ndarray]) -> Optional[np.ndarray]:
        """The index of each of `views` when each is one image's whole view of this handle (as
        `images[i]` or `array[i]` give it), else None. Read from where each view's pixels start."""
        if self._whole is None or self.writable or not self._count:
            return None
        if self._sorted_offsets is None:
            order = np.argsort(self._offsets, kind="stable")
            self._sorted_offsets = (self._offsets[order], order)
        offsets, order = self._sorted_offsets
        try:
            starts = np.fromiter((v.__array_interface__["data"][0] for v in views), np.int64, len(views))
        except (AttributeError, TypeError, KeyError):
            return None
        starts -= self._base
        at = np.minimum(np.searchsorted(offsets, starts), len(offsets) - 1)
        if not (offsets[at] == starts).all():
            return None
        indices = order[at]
        for view, i in zip(views, indices):
            if (not isinstance(view, np.ndarray) or view.dtype != np.uint8 or not view.flags.c_contiguous
                    or view.shape != tuple(self._shapes[i])):
                return None
        return indices

    def _live(self) -> np.ndarray:
        if self._whole is None:
            raise ValueError(f"{self.name}: this handle is closed (views taken before stay valid)")
        if self._edit is not None and self._edit.inherited():
            raise BlockError(
                f"{self.name}: this writable handle was attached by process {self._edit._pid} and "
                f"inherited by process {os.getpid()} across fork; only the process that attached "
                "may use it (its mapping is read-only here: a write through a view taken before "
                "the fork faults). Attach in the child once the parent has closed its handle")
        return self._whole

    def _image(self, i: int) -> np.ndarray:
        whole = self._live()
        i = self._index(i)
        h, w, c = (int(v) for v in self._shapes[i])
        start = int(self._offsets[i])
        return whole[start : start + h * w * c].reshape(h, w, c)

    def _path(self, i: int) -> str:
        self._live()
        i = self._index(i)
        return self._text(int(self._source[i, 0]), int(self._source[i, 1]))

    def _index(self, i: int) -> int:
        """`i` as an index of this handle's images (negative from the end); IndexError outside."""
        try:
            return range(self._count)[i]
        except IndexError:
            left_out = f" (and {len(self.failed)} that failed, left out)" if self.failed else ""
            raise IndexError(f"{self.name}: no image {i}: this handle gives {self._count} "
                             f"images{left_out}") from None

    def _text(self, offset: int, length: int) -> str:
        """`length` bytes at `offset` in the strings (a checked source path), decoded."""
        assert self._whole is not None
        start = self._strings + offset
        return bytes(self._whole[start : start + length]).decode("utf-8", "surrogateescape")

    def __len__(self) -> int:
        return self._count

    # Made on access, never stored: a stored one would make a reference cycle, and the mapping
    # and its lock would outlive a dropped handle until the garbage collector ran.
    @property
    def images(self) -> Sequence[np.ndarray]:
        """One `(H, W, C)` uint8 view per image, each made when asked for."""
        return _Images(self)

    @property
    def paths(self) -> Sequence[str]:
        """Source paths relative to the loaded folder, each decoded when asked for."""
        return _Paths(self)

    @property
    def array(self) -> Optional[np.ndarray]:
        """The whole dataset as one `(N, H, W, C)` view, when every image has one shape and their
        slots are evenly spaced; else None (a ragged dataset, or a partial handle whose failed
        images lie between others: `take` copies any of its images into one array)."""
        if self._array is not None:
            self._live()
        return self._array

    @property
    def shape(self) -> Optional[Tuple[int, int, int, int]]:
        """(N, H, W, C) when every image has one shape, else None."""
        return None if self._uniform is None or self.closed else (self._count, *self._uniform)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def closed(self) -> bool:
        return self._whole is None

    def _release(self) -> None:
        base = getattr(self, "_base", None)
        if base is not None and _MAPPED.get(base) is self:
            del _MAPPED[base]
        self._whole = None
        self._array = None
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # Views are alive: they keep the mapping (and the lock) until the last one goes.
                pass

    def close(self) -> None:
        """Lets go of the block (never unlinks it). Views taken before stay valid and keep the
        mapping, and the lock, until the last of them is gone; the handle itself can give no
        more."""
        self._release()

    def __enter__(self) -> "Block":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self._edit is not None:
            # The edits may be half done: leave the dataset marked, as a killed writer does.
            self._edit.abandoned = True
        self.close()

    def __reduce__(self):
        # Pickled by name: the receiver attaches on its own, no pixel is copied.
        return (attach, (self.name, self.writable, self.partial, self.backing))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} images"
        return f"<shmpipe.Block {self.name} {state}{' writable' if self.writable else ''}>"


def owner_of(view: object) -> Optional[Block]:
    """The open handle of this process whose mapping holds `view`'s pixels, if any."""
    try:
        start = view.__array_interface__["data"][0]  # type: ignore[attr-defined]
    except (AttributeError, TypeError, KeyError):
        return None
    for block in list(_MAPPED.values()):
        whole = block._whole
        if whole is not None and block._base <= start < block._base + len(whole):
            return block
    return None


def open_handle(name: str, backing: Optional[str], identity: Tuple[int, int, int, int]) -> Optional[Block]:
    """An open read-only handle of this process on that very block (same identity), if any."""
    for block in list(_MAPPED.values()):
        if (block.name == name and block.backing == backing and not block.writable
                and block._whole is not None and block.identity == identity):
            return block
    return None


def attach(name: str, writable: bool = False, partial: bool = False,
           backing: Optional[Union[str, os.PathLike]] = None) -> Block:
    """Attaches to the dataset `name` (`faces` or `shmpipe-faces`).

    Read-only views unless `writable`. A read-only handle holds the block's lock shared, a
    writable one exclusively, for as long as the handle or any view of it lives: `shmpipe apply`
    and `save` refuse meanwhile, and so does a second writer. A writable handle is for the
    process that attached it: a process forked from it gets a read-only mapping and a handle
    that refuses to give views (see `_EditMark`).

    A dataset holding images that failed at load is refused unless `partial`. With `partial`,
    the handle leaves those images out, as `shmpipe export --partial` does: `len()`, `images`,
    `array`, `paths`, `labels`, `original_sizes`, `format()`, `take()` and collated batches all
    number only the images that loaded, in the dataset's order (index i is the i-th image that
    loaded, the i-th image of the exported array), and `failed` maps each left-out image's
    source path to its reason. No failed image is ever given. `backing` is the folder of a
    `--backing DIR` dataset.
    """
    return Block(name, writable, partial, None if backing is None else os.fspath(backing))
