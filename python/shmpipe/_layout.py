"""The block's layout as this package reads it, mirroring block/src/layout.rs: the header's
fields, the image record, the states, and the check every image record passes before a view
of it is made (as block/src/validate.rs checks it). Change it with `LAYOUT_VERSION`, together
with the Rust side; `offsets_the_python_module_relies_on` there holds the offsets.
"""
from __future__ import annotations

import numpy as np

MAGIC = b"SHMPIPE\0"
LAYOUT_VERSION = 4
NAME_PREFIX = "shmpipe-"
SHM_DIR = "/dev/shm"
HEADER_SIZE = 512
IMAGE_RECORD_SIZE = 256
# Every slot starts at a multiple of this past the pixels region (`ALIGN` in block/layout.rs).
_ALIGN = 64

# Header: (offset, struct format) of the fields read here.
_HEADER = {
    "magic": (0, "8s"),
    "layout_version": (8, "<I"),
    "header_size": (12, "<I"),
    "total_size": (16, "<Q"),
    "image_count": (32, "<Q"),
    "channels": (44, "<I"),
    "image_table_offset": (48, "<Q"),
    "image_record_size": (56, "<Q"),
    "strings_offset": (80, "<Q"),
    "strings_len": (88, "<Q"),
    "pixels_offset": (96, "<Q"),
    "pixels_len": (104, "<Q"),
    "input_root_offset": (112, "<Q"),
    "input_root_len": (120, "<Q"),
    "flags": (188, "<I"),
    "created_unix_ns": (232, "<Q"),
    "python_writers": (248, "<Q"),
    "dataset_state": (296, "<I"),
    "history_count": (300, "<I"),
    "label_kind": (324, "<I"),
    "class_count": (328, "<I"),
    "class_names_offset": (336, "<Q"),
    "class_names_len": (344, "<Q"),
}
FLAG_COPY = 2
FLAG_KEPT = 8

# One image record, as `ImageRecord` in block/layout.rs.
_RECORD = np.dtype(
    {
        "names": ["slot_offset", "slot_len", "height", "width", "channels", "format",
                  "source_offset", "source_len", "status", "message_len", "message",
                  "original_width", "original_height", "label"],
        "formats": ["<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u8", "<u8", "<u4", "<u4", "S104",
                    "<u4", "<u4", "<i8"],
        "offsets": [0, 8, 16, 20, 24, 28, 32, 40, 48, 60, 80, 184, 188, 192],
        "itemsize": IMAGE_RECORD_SIZE,
    }
)
_MESSAGE_LEN = 104
_LABEL_AT = 192
# Source formats, as `codec::FORMATS` in worker/src/codec.rs.
FORMATS = ("png", "jpeg", "webp", "gif", "bmp", "tiff")
_DONE = 2
# Dataset states, as `DatasetState` in block/layout.rs.
_READY = 2
_NOT_READY = {
    0: "is a run's working block, not a dataset: keep one with `shmpipe load` or `shmpipe run --keep NAME`",
    1: "is incomplete: its load was interrupted; run `shmpipe repair {short}` or load it again",
    3: "is damaged: an apply was interrupted while it changed the pixels; run `shmpipe repair {short}`",
    4: "is damaged: a repair was interrupted; run `shmpipe repair {short}` again",
    5: ("is damaged: a writable Python handle (shmpipe.attach(..., writable=True)) ended without "
        "closing (killed, or its interpreter died) while it could write, so its images may be half "
        "edited; `shmpipe repair` cannot restore them (Python edits are in no step of the "
        "dataset's history: a rebuild from the sources would drop every one of them), so run "
        "`shmpipe rm {short}` and load it again, then redo the edits"),
}
# `DatasetState::PythonWriting`: a writable handle is attached. Found under the lock, its writer
# is gone without letting go in order.
_PYTHON_WRITING = 5


def _bad_records(slot_offset: np.ndarray, slot_len: np.ndarray, height: np.ndarray,
                 width: np.ndarray, channels: np.ndarray, source_offset: np.ndarray,
                 source_len: np.ndarray, pixels_len: int, strings_len: int,
                 block_channels: int) -> np.ndarray:
    """Which image records a block may not be attached with (True where bad), as
    block/src/validate.rs checks them: each slot inside the pixels, 64-byte aligned, at or
    after the end of the slot before, `height * width * channels` bytes long, with the block's
    channels; each source path inside the strings.

    `pixels_len` and `strings_len` are Python integers already checked to lie inside the block
    (below 2**63). No sum of two record fields is ever formed: a field is first compared with
    those bounds, and a length only with the room left after its offset (`bound - min(offset,
    bound)`, never negative). So no uint64 can wrap, whatever the record holds, and the verdict
    is the one Python integers give (`offset + length > bound`). Vectorised: nothing per image."""
    plen, slen = np.uint64(pixels_len), np.uint64(strings_len)
    ok = (slot_offset <= plen) & (slot_len <= plen - np.minimum(slot_offset, plen))
    ok &= slot_offset % np.uint64(_ALIGN) == 0
    ok &= (source_offset <= slen) & (source_len <= slen - np.minimum(source_offset, slen))
    # height * width of two uint32 is below 2**64; times channels could wrap, so the length is
    # divided instead (channels is the block's, 1, 3 or 4, once the first term holds).
    ok &= channels == block_channels
    c = np.uint64(block_channels)
    pixels = height.astype(np.uint64) * width.astype(np.uint64)
    ok &= (slot_len % c == 0) & (slot_len // c == pixels)
    if len(ok) > 1 and ok.all():
        # In order and disjoint: each slot starts at or after the end of the one before (every
        # offset + length is now at most pixels_len, so the sums are exact).
        ends = slot_offset + slot_len
        ok[1:] &= slot_offset[1:] >= ends[:-1]
    return ~ok
