"""Data identity of a run: the fingerprint of the data it trained on, recorded in ``data.json``.

Resuming a run, or starting one ``init_from`` a run, on data whose fingerprint changed since is
refused with what changed (``--force`` proceeds and records the new fingerprint). Runs written before
fingerprints existed have no ``data.json``: they resume, and it is recorded then.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.train")

DATA_FILE = "data.json"


class DataChangedError(UserError):
    """The data changed since the run (or the run it starts from) trained on it."""


def read_recorded(run_dir: Path) -> dict | None:
    """The fingerprint recorded in ``run_dir/data.json`` (None: none recorded, e.g. an older run)."""
    try:
        return json.loads((Path(run_dir) / DATA_FILE).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def record(run_dir: Path, fingerprint: dict, previous: dict | None = None) -> None:
    """Write ``data.json`` (the previous fingerprint kept under ``replaced`` when --force moved on)."""
    from tunesmith.artifacts.checkpoint import atomic_write_json

    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    payload: dict[str, Any] = {"fingerprint": fingerprint, "recorded_at": now}
    if previous is not None:
        payload["replaced"] = previous
    atomic_write_json(Path(run_dir) / DATA_FILE, payload)


def changes(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints, one line per file or key (empty: the same data).

    Only content counts: the same files in a moved or copied folder are the same data."""
    lines = []
    if old.get("kind") != new.get("kind"):
        return [f"kind of data: {old.get('kind')} → {new.get('kind')}"]
    old_files, new_files = old.get("files") or {}, new.get("files") or {}
    for name in sorted(set(old_files) | set(new_files)):
        a, b = old_files.get(name), new_files.get(name)
        if a == b:
            continue
        if a is None:
            lines.append(f"{name}: new (not there when the run trained)")
        elif b is None:
            lines.append(f"{name}: gone")
        elif "rows" in a and a.get("rows") != b.get("rows"):
            lines.append(f"{name}: {a['rows']} → {b['rows']} rows")
        elif "bytes" in a and a.get("bytes") != b.get("bytes"):
            lines.append(f"{name}: {a['bytes']} → {b['bytes']} bytes")
        else:
            size = f" (same {a['rows']} rows)" if "rows" in a else ""
            lines.append(f"{name}: content changed{size}")
    for key in sorted((set(old) | set(new)) - {"kind", "source", "files"}):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key)} → {new.get(key)}")
    return lines


def source_run(init_from: str) -> Path | None:
    """The run folder an ``init_from`` reference points into (a run, or one of its checkpoints), if any."""
    if not init_from or ":" in init_from.split("/", 1)[0]:
        return None  # hf:DIR and other schemes carry no run
    path = Path(init_from)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "run.json").is_file():
            return candidate
    return None


def check_data_identity(
    run_dir: Path,
    fingerprint: dict | None,
    *,
    resuming: bool,
    init_from: str = "",
    force: bool = False,
    write: bool = True,
) -> None:
    """Refuse (unless ``force``) to resume, or to start from ``init_from``'s run, on changed data;
    record ``fingerprint`` in the run folder when ``write`` (the main rank)."""
    if not fingerprint:
        return
    recorded = read_recorded(run_dir)
    problems: list[str] = []
    if resuming and recorded is not None:
        if recorded.get("source") != fingerprint.get("source"):
            log.info("data folder moved: %s → %s", recorded.get("source"), fingerprint.get("source"))
        diff = changes(recorded, fingerprint)
        if diff:
            problems.append(f"the data changed since run {run_dir} trained on it:\n    " + "\n    ".join(diff))
    source = source_run(init_from)
    if not resuming and source is not None and source.resolve() != Path(run_dir).resolve():
        theirs = read_recorded(source)
        if (
            theirs
            and theirs.get("kind") == fingerprint.get("kind")
            and theirs.get("source") == fingerprint.get("source")
        ):
            diff = changes(theirs, fingerprint)
            if diff:
                problems.append(
                    f"init_from={init_from}: the data changed since run {source} trained on it:\n    "
                    + "\n    ".join(diff)
                )
    if problems:
        message = "\n".join(problems)
        if not force:
            raise DataChangedError(
                message + "\nPass --force to train on the data as it is now, or --fresh to restart this run."
            )
        log.warning("%s\n--force: continuing on the data as it is now", message)
    if write and (recorded != fingerprint):
        record(run_dir, fingerprint, previous=recorded if resuming and recorded is not None else None)
