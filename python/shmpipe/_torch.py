"""torch, when the program uses it: batches become tensors sharing their arrays' memory (no copy),
pinned when a loader asks for it. torch is never imported here unless the program imported it
first or asked for tensors: a NumPy-only program does not pay for it.
"""
from __future__ import annotations

import sys
import warnings
from typing import Optional

import numpy as np


def wanted(tensors: Optional[bool]) -> bool:
    """Whether batches should be tensors: as asked, or (None) when the program imported torch."""
    return "torch" in sys.modules if tensors is None else bool(tensors)


def module():
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"tensors were asked for, but torch cannot be imported: {e}") from None
    return torch


def can_pin() -> bool:
    """Whether pinned memory can be had: it needs an accelerator (pinning is for copies to it). As
    torch's DataLoader does, asking without one warns and gives ordinary memory."""
    torch = module()
    accelerator = getattr(torch, "accelerator", None)
    available = (accelerator.is_available() if accelerator is not None
                 else torch.cuda.is_available())
    if not available:
        warnings.warn("pin_memory=True, but no accelerator is found: batches are not pinned",
                      stacklevel=3)
    return available


def tensor(array: np.ndarray):
    """`array` as a tensor over the same memory."""
    return module().from_numpy(array)


def pinned(shape, dtype) -> "tuple[np.ndarray, object]":
    """A fresh pinned tensor of `shape` and NumPy `dtype`, and the array over its memory."""
    torch = module()
    t = torch.empty(shape, dtype=tensor(np.empty(0, dtype)).dtype, pin_memory=True)
    return t.numpy(), t
