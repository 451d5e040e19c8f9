"""The results log of batch generation: ``DIR/results.jsonl``, one fsynced line per finished item.

The audio is written atomically first and its line appended after, so a killed run leaves only
complete items behind and the same command continues with the rest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS = "results.jsonl"


def read_done(out: Path, suffix: str) -> set[str]:
    """Ids whose results line is complete and whose audio file exists."""
    path = out / RESULTS
    done: set[str] = set()
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that item is generated again
        if not isinstance(record, dict):
            continue
        name = str(record.get("file", ""))
        if name.endswith(suffix) and (out / name).is_file():
            done.add(str(record.get("id")))
    return done


def repair_tail(path: Path) -> None:
    """Drop a trailing partial line (a kill during an append) so the next append starts on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


def append_result(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
