"""Free-disk check before any byte is fetched: the bytes still to download plus the bytes to unpack."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import UserError

MARGIN = 64 << 20  # kept free besides what the archives need (state files, a filesystem's own reserve)


def human(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``; binary units up to TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class SpaceNeed:
    """What one archive still needs on disk: bytes to download and bytes its files take unpacked."""

    name: str
    download: int
    unpack: int


def free_bytes(folder: Path) -> int:
    """Free bytes (for this user) on the filesystem holding ``folder`` (or its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_space(folder: Path, needs: list[SpaceNeed], transient: int | None = None) -> int:
    """Raise a UserError naming the sizes when ``folder``'s filesystem lacks the room; returns the bytes needed.

    ``transient``: archives are deleted once unpacked and at most this many are on disk at once, so only the
    largest ``transient`` downloads count (all of them when None)."""
    downloads = sorted((n.download for n in needs), reverse=True)
    download = sum(downloads[:transient] if transient else downloads)
    unpack = sum(n.unpack for n in needs)
    needed = download + unpack
    if not needed:
        return 0
    free = free_bytes(folder)
    if needed + MARGIN > free:
        biggest = max(needs, key=lambda n: n.download + n.unpack)
        raise UserError(
            f"not enough free disk space in {folder}: needs {human(needed)} ({human(download)} to download, "
            f"{human(unpack)} to unpack; largest {biggest.name}: {human(biggest.download + biggest.unpack)}) "
            f"plus {human(MARGIN)} spare, but only {human(free)} is free. Free space, choose another --to, "
            "or fetch fewer archives (--parts, a smaller --size)"
        )
    return needed
