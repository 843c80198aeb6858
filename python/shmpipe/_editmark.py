"""The dataset's "a writable Python handle is attached" mark (`_EditMark`), and the at-fork hook
that makes a fork child's copy of a writable mapping read-only before any code of the child runs.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct
import threading
import weakref

from ._layout import _HEADER, _PYTHON_WRITING, _READY


class _EditMark:
    """The dataset's "a writable Python handle is attached" state, and what clears it.

    Set when a writable handle attaches (under its exclusive lock, before any write); cleared
    (state back to ready) only when the handle lets go in order: its mapping is gone (closed,
    or collected with no view left, so nothing of it can write any more), or the interpreter
    exits normally with no other thread alive (a daemon thread could be writing through a view).
    A writer killed, or whose interpreter dies, leaves the mark, and every later reader refuses
    the dataset. The mark holds a descriptor of its own, which keeps the lock
    from the mapping's end until the state is written back.

    Only the attaching process ever writes through the mapping. A process forked from it (a
    fork-start `multiprocessing.Pool`, `os.fork`) inherits the mapping, and with it every view
    made before the fork; the attaching process alone clears the mark, so a child that died
    half-way through a write would leave a half-edited image in a dataset called ready. So the
    child's copy of the mapping is made read-only the moment it exists (`mprotect`, in an
    at-fork hook, before any code of the child runs): a write through an inherited view faults
    before a byte lands (the child dies of SIGSEGV), and the handle itself refuses to give the
    child any view (`BlockError`). Nothing a child does can change the pixels, whatever way it
    ends, so the parent's orderly end truthfully sets the dataset ready. The other design,
    keeping the mark until every process holding the mapping has ended cleanly, needs a count
    shared between processes, and marks the dataset damaged whenever a fork pool's idle workers
    are terminated (as `Pool.__exit__` does), though they never wrote.
    """

    def __init__(self, fd: int, mapping: mmap.mmap, address: int, length: int):
        self._fd = os.dup(fd)
        self._pid = os.getpid()
        # Alive at `end` only when the interpreter exits with the mapping still there.
        self._mapping = weakref.ref(mapping)
        self._address = address
        self._length = length
        # An exception out of the `with` block: the edits may be half done, so the mark stays.
        self.abandoned = False
        _EDIT_MARKS.add(self)

    def inherited(self) -> bool:
        """Whether this process is not the one that attached (a fork child of it)."""
        return os.getpid() != self._pid

    def _after_fork_in_child(self) -> None:
        """Makes the child's copy of the mapping read-only (see the class)."""
        mapping = self._mapping()
        if mapping is None or mapping.closed:
            return
        if _mprotect_read_only(self._address, self._length) != 0:
            # Never seen: the range is this live mapping. A child that might write must not run.
            message = (f"shmpipe: cannot make an inherited writable mapping read-only in the fork "
                       f"child {os.getpid()} ({os.strerror(ctypes.get_errno())}); the child exits "
                       "rather than risk writing half an image\n")
            os.write(2, message.encode())
            os._exit(70)

    def set(self) -> None:
        self._write(_PYTHON_WRITING)

    def _write(self, state: int) -> None:
        offset, fmt = _HEADER["dataset_state"]
        os.pwrite(self._fd, struct.pack(fmt, state), offset)

    def end(self) -> None:
        """Runs once, when the mapping is gone or at the interpreter's normal exit."""
        try:
            # A forked child inherits the mark with the mapping; only the attaching process ends it.
            if os.getpid() == self._pid and not self.abandoned and not self._may_still_write():
                self._write(_READY)
        finally:
            os.close(self._fd)

    def _may_still_write(self) -> bool:
        """Whether a write may be under way as the mark would be cleared: the interpreter is
        exiting with the mapping still there and another thread alive. Such a (daemon) thread
        may hold a view and be in the middle of a write, which NumPy does without the GIL, and
        it runs on until the process ends: the edits may be half done, so the mark stays. Once
        the mapping is gone, nothing of it can write."""
        if self._mapping() is None:
            return False
        main = threading.main_thread()
        return any(t is not main and t.is_alive() for t in threading.enumerate())


# Every writable handle's mark whose mapping is not yet gone: what a fork child makes read-only.
_EDIT_MARKS: "weakref.WeakSet[_EditMark]" = weakref.WeakSet()
_PROT_READ = 1
# Loaded at import, never in a fork child: dlopen there could wait forever on a lock that another
# thread of the parent held at the fork.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int


def _mprotect_read_only(address: int, length: int) -> int:
    return _libc.mprotect(address, length, _PROT_READ)


def _after_fork_in_child() -> None:
    for mark in list(_EDIT_MARKS):
        mark._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
