"""A small real pipeline through the CLI, run once per test session: the quick demo (prepare on synthetic
music → train codec tiny → encode → train lm tiny → generate → review both runs, ~10 s on 2 cores) under
umask 022, for tests that inspect what it wrote (the ``quick_demo`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

UMASK = 0o022
FILE_MODE, DIR_MODE = 0o644, 0o755  # what umask 022 gives open() and mkdir()


@dataclasses.dataclass
class DemoRun:
    """The quick demo's output folder, its finished process and its wall time in seconds."""

    out: Path
    proc: subprocess.CompletedProcess
    seconds: float


def run_quick_demo(out: Path) -> DemoRun:
    """``python -m tunesmith.demo --quick --out OUT`` in a subprocess under umask 022."""
    env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "COLUMNS": "200"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith.demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        umask=UMASK,
    )
    return DemoRun(out, proc, time.perf_counter() - start)


@contextlib.contextmanager
def umask(mask: int = UMASK) -> Iterator[None]:
    """This process's umask set to ``mask`` for the block."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def wrong_modes(root: Path, file_mode: int = FILE_MODE, dir_mode: int = DIR_MODE) -> list[str]:
    """``"0600 path"`` for every file under ``root`` whose permissions are not ``file_mode`` (folders:
    ``dir_mode``; ``root`` included); symbolic links and other kinds of entries are listed as such."""
    wrong = []
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            expected = dir_mode
        elif stat.S_ISREG(info.st_mode):
            expected = file_mode
        else:
            wrong.append(f"not a plain file or folder: {path}")
            continue
        if mode != expected:
            wrong.append(f"{mode:04o} {path}")
    return wrong
