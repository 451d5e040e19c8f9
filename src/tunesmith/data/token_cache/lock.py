"""One encoder per token cache at a time: an advisory lock file."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("tunesmith.encode")


@contextlib.contextmanager
def exclusive_cache(cache_dir: Path) -> Iterator[None]:
    """Holds ``cache_dir/.lock`` while encoding: a second process (an `encode` beside a `train lm` building
    the same cache) waits, logged, and then finds the splits finished instead of encoding them twice.
    Advisory ``flock``; released by the kernel if the holder dies. No-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(cache_dir / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            log.info("%s: %s is encoding this cache; waiting for it to finish", cache_dir, holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
