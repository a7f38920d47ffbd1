"""Halve the batch on out-of-memory.

STYLE.md plans one such helper in `inference/batching.py`, shared by GCG, AutoDAN and eval; it does not exist yet,
so the attacks keep theirs here (private) until it lands, then import it from there.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    msg = str(err)
    # CUDA, MPS and the CPU allocator each word it differently; these are their fixed phrases
    return isinstance(err, RuntimeError) and any(
        s in msg for s in ("out of memory", "DefaultCPUAllocator: can't allocate memory", "MPS backend out of memory")
    )


def find_executable_batch_size(fn: Callable[[int], T], start: int) -> T:
    """Call `fn(batch_size)`, halving `batch_size` after each out-of-memory error, down to 1.

    Raises:
        RuntimeError: out of memory even at batch size 1 (re-raised from the last attempt).
    """
    size = max(1, int(start))
    while True:
        try:
            return fn(size)
        except Exception as e:
            size = _halve(e, size)


def _halve(e: Exception, size: int) -> int:
    """Re-raise anything but an out-of-memory error (or OOM at size 1); else free memory and halve."""
    if not is_oom(e) or size == 1:
        raise e
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    logger.warning("out of memory at batch size %d; retrying with %d", size, size // 2)
    return size // 2


def batched(fn: Callable[[int, int], list[T]], n: int, start: int | None) -> list[T]:
    """Apply `fn(lo, hi) -> results for items [lo, hi)` over n items in chunks of `start` (None: all at once).
    On out-of-memory the chunk halves and stays halved; finished chunks are kept."""
    size = max(1, start or n)
    out: list[T] = []
    lo = 0
    while lo < n:
        hi = min(n, lo + size)
        try:
            out.extend(fn(lo, hi))
        except Exception as e:
            size = _halve(e, size)
            continue
        lo = hi
    return out
