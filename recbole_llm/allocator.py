"""Training steps without page faults: freed memory is kept for the next step while an epoch trains.

glibc's malloc serves a block above its mmap threshold (128 KB, rising by itself to at most 32 MB) with fresh pages
from the kernel and unmaps it on free. A training step makes and frees the same large tensors every step (the
catalog logits and their gradients: 52 MB per LLM2BERT4Rec step on Beauty), so each step pays the kernel's page
faults and zeroing for them again, work that is neither matrix products nor anything the model computes. Within
``keep_freed_memory`` the thresholds are raised (what the Makefile's ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` do for a whole process), so a freed block is reused by the next step; on leaving, the
thresholds are glibc's defaults again and the kept memory goes back to the system (``malloc_trim``). The
process's resident memory during an epoch is then its peak step's, not less. Not glibc (macOS, musl): nothing
changes. Measured side by side: ``benchmarks/results/profile/train_speed_stop53.json``.
"""
from __future__ import annotations

import contextlib
import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
KEEP = 2**31 - 1  # mallopt takes an int: 2 GB, above any one tensor of a training step here
GLIBC_DEFAULT = 128 * 1024


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not a glibc system
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True, libc=None):
    """Within the block, glibc keeps freed memory for reuse instead of unmapping it; afterwards it is given back.
    A process started with ``MALLOC_MMAP_THRESHOLD_`` set (``make``) keeps its own choice."""
    libc = libc if libc is not None else (_glibc() if enabled else None)
    if libc is None or not enabled or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        yield False
        return
    kept = bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP)) & bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP))
    try:
        yield kept
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT)
        libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT)
        libc.malloc_trim(0)
