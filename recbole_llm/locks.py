"""An exclusive lock on a file shared by every process that uses it (``<file>.lock``, ``fcntl.flock``): the embedding
cache while a paid batch is stored, an ensemble member while it is trained, a report's run file while it is made."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import RecboleLLMError


class LockHeld(RecboleLLMError, BlockingIOError):
    """Another process holds the lock asked for with ``wait=False``."""


@contextlib.contextmanager
def exclusive(path: os.PathLike, wait: bool = True):
    """Hold ``<path>.lock`` for the block; ``wait=False`` raises ``LockHeld`` at once if another process holds it.
    Released when the block ends, or when the process dies."""
    import fcntl

    path = Path(path)
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(f"{path} is locked by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
