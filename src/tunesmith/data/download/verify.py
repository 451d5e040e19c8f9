"""Checksums of downloaded files: sha1, sha256 and git's blob id, computed in a pass or while receiving."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path

CHUNK = 4 << 20


def new_hash(algorithm: str, size: int | None = None) -> hashlib._Hash:
    """A hashlib object for ``algorithm``; git-blob-sha1 (``sha1("blob <size>\\0" + content)``) needs ``size``."""
    if algorithm == "git-blob-sha1":
        if size is None:
            raise ValueError("git-blob-sha1 needs the file size")
        digest = hashlib.sha1()
        digest.update(f"blob {size}\0".encode())
        return digest
    if algorithm in ("sha1", "sha256"):
        return hashlib.new(algorithm)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def file_checksum(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file's content by ``algorithm`` (read in 4 MiB blocks)."""
    digest = new_hash(algorithm, os.path.getsize(path))
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class BackgroundHash:
    """Hash bytes fed in order on a separate thread (hashlib releases the GIL on large blocks), so hashing
    overlaps with receiving. ``feed`` takes ownership of each block; ``hexdigest`` waits for the rest."""

    def __init__(self, algorithm: str, size: int | None = None) -> None:
        self._digest = new_hash(algorithm, size)
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name="download-hash", daemon=True)
        self._thread.start()
        self._done = False

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._digest.update(block)

    def feed(self, block: bytes) -> None:
        self._queue.put(block)

    def feed_file(self, path: Path, limit: int) -> None:
        """Feed the first ``limit`` bytes of ``path`` (a resumed download's prefix)."""
        if limit <= 0:
            return
        with open(path, "rb") as f:
            left = limit
            while left > 0 and (block := f.read(min(CHUNK, left))):
                self.feed(block)
                left -= len(block)

    def hexdigest(self) -> str:
        if not self._done:
            self._queue.put(None)
            self._thread.join()
            self._done = True
        return self._digest.hexdigest()

    def abandon(self) -> None:
        """Stop the thread without a result (the download failed)."""
        if not self._done:
            self._queue.put(None)
            self._thread.join()
            self._done = True
