"""The resume log: one completion record per finished (or rejected) track."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunesmith.data.sources import Track


class TrackLog:
    """``DIR/state/tracks.jsonl``: append-only completion records; the last record per track wins.

    A torn last line (killed mid-write) is cut off when the log is opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                with open(path, "r+b") as f:
                    f.truncate(cut)
                data = data[:cut]
            for line in data.decode("utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "track_id" in record:
                    self.records[record["track_id"]] = record
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def is_current(self, track: Track) -> bool:
        record = self.records.get(track.track_id)
        return record is not None and record.get("fingerprint") == track.fingerprint()

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records[record["track_id"]] = record

    def close(self) -> None:
        self._file.close()
