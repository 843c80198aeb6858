"""Attach to a shmpipe block by name from Python, and see its pixels as NumPy arrays, no copy.

    import shmpipe_block as sb
    ds = sb.attach("faces")          # the dataset made by `shmpipe load DIR --name faces`
    ds.array.shape                   # (N, H, W, C) uint8, when every image has one shape
    ds.images[3]                     # (H, W, C) view of image 3, always
    ds.paths[3]                      # its source path, relative to the loaded folder
    ds.close()                       # drop your views first: a view used after close() crashes

Only a dataset whose state is ready attaches: one whose load, apply or repair was interrupted
is refused with what to do (`shmpipe repair NAME`). While attached, the module holds the block's
lock shared, so `apply` and `repair` refuse to change the pixels under it. Images that failed at
load have no pixels: attach refuses a dataset holding any, unless `partial=True`; `failed` maps
their indices to the reasons.

Writes through the views change the block in place (`shmpipe save` then writes them out).
This module never unlinks the block, and keeps it away from Python's resource tracker, which
before Python 3.13 unlinks even segments it only attached to. `shmpipe rm NAME` removes it.

The layout mirrors worker/src/block/layout.rs (LAYOUT_VERSION 2); the offsets below are checked there.
"""
import fcntl
import os
import stat
import struct
import sys
from multiprocessing import shared_memory

import numpy as np

MAGIC = b"SHMPIPE\0"
LAYOUT_VERSION = 2
NAME_PREFIX = "shmpipe-"
HEADER_SIZE = 512
IMAGE_RECORD_SIZE = 192

# Header: (offset, struct format) of the fields this module reads.
_HEADER = {
    "magic": (0, "8s"),
    "layout_version": (8, "<I"),
    "header_size": (12, "<I"),
    "total_size": (16, "<Q"),
    "state": (28, "<I"),
    "image_count": (32, "<Q"),
    "channels": (44, "<I"),
    "image_table_offset": (48, "<Q"),
    "image_record_size": (56, "<Q"),
    "strings_offset": (80, "<Q"),
    "strings_len": (88, "<Q"),
    "pixels_offset": (96, "<Q"),
    "pixels_len": (104, "<Q"),
    "flags": (188, "<I"),
    "dataset_state": (296, "<I"),
}
# Image record: status word (low 8 bits), message length and message.
_STATUS_AT, _MESSAGE_LEN_AT, _MESSAGE_AT, _MESSAGE_LEN = 48, 60, 80, 104
_DONE = 2
# Dataset states, as `DatasetState` in block/layout.rs.
_READY = 2
_NOT_READY = {
    0: "is a run's working block, not a kept dataset",
    1: "is incomplete: its load was interrupted; run `shmpipe repair {short}` or load it again",
    3: "is damaged: an apply was interrupted while it changed the pixels; run `shmpipe repair {short}`",
    4: "is damaged: a repair was interrupted; run `shmpipe repair {short}` again",
}
# Image record: slot_offset, slot_len, height, width, channels, format, source offset, source len.
_RECORD = struct.Struct("<QQIIIIQQ")
FLAG_COPY = 2
FLAG_KEPT = 8


class BlockError(Exception):
    """The name does not hold a valid shmpipe block."""


def _open(name):
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    shm = shared_memory.SharedMemory(name=name)
    # Python < 3.13 registers attached segments too and unlinks them at exit: undo that.
    from multiprocessing import resource_tracker

    resource_tracker.unregister(shm._name, "shared_memory")
    return shm


class Block:
    """One attached block. `images`, `array` and `paths` as in the module doc."""

    def __init__(self, name, partial=False):
        self.name = name if name.startswith(NAME_PREFIX) else NAME_PREFIX + name
        self._partial = partial
        try:
            self._shm = _open(self.name)
        except FileNotFoundError:
            raise BlockError(f"no block named {self.name} (see `shmpipe ls`)") from None
        except ValueError as e:  # an empty segment: its creator has not sized it yet
            raise BlockError(f"{self.name} is not ready: {e}") from None
        try:
            self._check_ours()
            self._read()
        except Exception:
            self._shm.close()
            raise

    def _check_ours(self):
        # glibc's shm_open adds O_NOFOLLOW; check the rest as shmpipe does: a regular file owned
        # by this user, nothing placed there by someone else.
        st = os.fstat(self._shm._fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise BlockError(f"{self.name} is not ours: not a regular file owned by uid {os.geteuid()}")

    def _lock(self):
        # Shared, as `shmpipe save` takes it: refused while a shmpipe writer holds the block, and
        # held until close() so that none starts meanwhile.
        try:
            fcntl.flock(self._shm._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BlockError(f"{self.name} is busy: a shmpipe load, apply or repair is writing it") from None

    def _field(self, key):
        offset, fmt = _HEADER[key]
        return struct.unpack_from(fmt, self._shm.buf, offset)[0]

    def _read(self):
        buf = self._shm.buf
        size = len(buf)
        if size < HEADER_SIZE or self._field("magic") != MAGIC:
            raise BlockError(f"{self.name} is not a shmpipe block")
        if self._field("layout_version") != LAYOUT_VERSION or self._field("header_size") != HEADER_SIZE:
            raise BlockError(f"{self.name} has layout version {self._field('layout_version')}, this module reads {LAYOUT_VERSION}")
        if self._field("total_size") > size or self._field("image_record_size") != IMAGE_RECORD_SIZE:
            raise BlockError(f"{self.name}: sizes do not match this module's layout")
        if self._field("flags") & FLAG_COPY:
            raise BlockError(f"{self.name} is a copy-mode block: it holds no pixels")
        if not self._field("flags") & FLAG_KEPT:
            # A run's own block: its slots are reserved and written while workers claim them,
            # and it is unlinked when the run ends.
            raise BlockError(f"{self.name} is a run's working block, not a dataset: "
                             "keep one with `shmpipe load` or `shmpipe run --keep NAME`")
        self._lock()
        state = self._field("dataset_state")
        if state != _READY:
            short = self.name[len(NAME_PREFIX):]
            why = _NOT_READY.get(state, "has an unknown dataset state").format(short=short)
            raise BlockError(f"{self.name} {why}")
        count = self._field("image_count")
        table = self._field("image_table_offset")
        strings, strings_len = self._field("strings_offset"), self._field("strings_len")
        pixels, pixels_len = self._field("pixels_offset"), self._field("pixels_len")
        self.channels = self._field("channels")
        if table + count * IMAGE_RECORD_SIZE > size or strings + strings_len > size or pixels + pixels_len > size:
            raise BlockError(f"{self.name}: a region runs past the end of the block")
        self.paths, self.images, self._slots, self.failed = [], [], [], {}
        for i in range(count):
            at = table + i * IMAGE_RECORD_SIZE
            if struct.unpack_from("<I", buf, at + _STATUS_AT)[0] & 0xFF != _DONE:
                n = min(struct.unpack_from("<I", buf, at + _MESSAGE_LEN_AT)[0], _MESSAGE_LEN)
                self.failed[i] = bytes(buf[at + _MESSAGE_AT : at + _MESSAGE_AT + n]).decode("utf-8", "replace")
            off, length, h, w, c, _fmt, s_off, s_len = _RECORD.unpack_from(buf, table + i * IMAGE_RECORD_SIZE)
            if length != h * w * c or off + length > pixels_len or s_off + s_len > strings_len:
                raise BlockError(f"{self.name}: image {i}'s record is out of bounds")
            raw = bytes(buf[strings + s_off : strings + s_off + s_len])
            self.paths.append(raw.decode("utf-8", "surrogateescape"))
            self._slots.append((pixels + off, h, w, c))
            self.images.append(np.ndarray((h, w, c), np.uint8, buffer=buf, offset=pixels + off))
        if self.failed and not self._partial:
            first = min(self.failed)
            raise BlockError(f"{self.name} holds {len(self.failed)} image(s) that failed at load, with no "
                             f"pixels (the first: {self.paths[first]}: {self.failed[first]}); "
                             "attach(name, partial=True) gives the others, `failed` lists them")
        shapes = {(h, w, c) for _, h, w, c in self._slots}
        self.array = None
        if count and len(shapes) == 1:
            h, w, c = shapes.pop()
            starts = [o for o, *_ in self._slots]
            stride = starts[1] - starts[0] if count > 1 else h * w * c
            if all(b - a == stride for a, b in zip(starts, starts[1:])):
                # Slots are 64-byte aligned: a strided view covers them all without a copy.
                self.array = np.ndarray((count, h, w, c), np.uint8, buffer=buf, offset=starts[0],
                                        strides=(stride, w * c, c, 1))

    @property
    def shape(self):
        """(N, H, W, C) when every image has one shape, else None."""
        return None if self.array is None else self.array.shape

    def close(self):
        """Unmaps the block (never unlinks it). Views must not be used afterwards."""
        self.images, self.array = [], None
        self._shm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def attach(name, partial=False):
    """Attaches to the dataset `name` (`faces` or `shmpipe-faces`). With `partial`, a dataset
    holding images that failed at load attaches too; `failed` maps their indices to the reasons,
    and their views hold no picture."""
    return Block(name, partial)
