"""Run folders: ``runs/<task>/<signature>/``, where the signature hashes the config delta.

The signature is a short hash of the task, the preset and the canonical difference between
the resolved config and the preset's defaults, minus keys that do not change the math
(logging, workers, output paths). The same command twice lands in the same folder and
resumes. Unlike Dora, the full resolved config is stored: if a preset default changed since
the run started, reopening names the keys that differ and refuses unless ``force``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tunesmith import __version__
from tunesmith.artifacts.checkpoint import atomic_write_json
from tunesmith.config import (
    ConfigError,
    Resolved,
    canonical_json,
    diff,
    flatten,
    is_math_key,
    legacy_key,
    rename_nested,
)

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
STATUS_FILE = "status.json"
HISTORY_FILE = "history.jsonl"


def default_runs_dir() -> Path:
    """``$TUNESMITH_RUNS``, else the team config's ``runs_dir`` (tunesmith.team), else ./runs."""
    from tunesmith.team import configured_runs_dir

    return Path(os.environ.get("TUNESMITH_RUNS") or configured_runs_dir() or "runs")


def math_delta(resolved: Resolved) -> dict[str, Any]:
    """The resolved config's departures from its preset that change the math (key → value)."""
    return {key: new for key, (_, new) in resolved.delta().items() if is_math_key(key)}


def preset_name(preset: str) -> str:
    path = Path(preset)
    return path.stem if path.suffix in (".yaml", ".yml") else preset


def signature(resolved: Resolved) -> str:
    """Hash of task, preset name and math delta; a renamed key is hashed under its old name, so the
    run folder of a command stays where it was before the rename."""
    delta = {legacy_key(key, resolved.renamed): value for key, value in math_delta(resolved).items()}
    payload = {"task": resolved.task, "preset": preset_name(resolved.preset), "delta": delta}
    return hashlib.sha1(canonical_json(payload).encode()).hexdigest()[:8]


@dataclasses.dataclass
class Run:
    task: str
    preset: str
    signature: str
    dir: Path
    config: dict
    force: bool = False  # --force: proceed despite a changed config or changed data (engine.data_identity)

    @property
    def history_path(self) -> Path:
        return self.dir / HISTORY_FILE

    @property
    def status_path(self) -> Path:
        return self.dir / STATUS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def samples_dir(self) -> Path:
        return self.dir / "samples"

    @property
    def tensorboard_dir(self) -> Path:
        return self.dir / "tensorboard"

    def write_status(self, **fields: Any) -> None:
        """Merge ``fields`` into status.json. ``state``: running, finished, failed, aborted (the stability
        guard), or interrupted (stopped by a signal or Ctrl-C; the same command resumes). A new state
        drops the previous one's ``reason``."""
        status = read_json(self.status_path) or {}
        if "state" in fields:
            status.pop("reason", None)
        status.update(fields, updated_at=_now())
        atomic_write_json(self.status_path, status)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def open_run(
    resolved: Resolved,
    runs_dir: Path | None = None,
    *,
    fresh: bool = False,
    force: bool = False,
    is_main: bool = True,
) -> Run:
    """Create or reopen the run folder for ``resolved``; only the main rank writes."""
    runs_dir = Path(runs_dir or default_runs_dir())
    sig = signature(resolved)
    run_dir = runs_dir / resolved.task / sig
    run_file = run_dir / RUN_FILE
    if fresh and run_dir.exists() and is_main:
        log.info("--fresh: deleting %s", run_dir)
        shutil.rmtree(run_dir)
    stored = read_json(run_file) if run_file.exists() else None
    if stored is not None:
        stored["config"] = rename_nested(stored.get("config", {}), resolved.renamed, str(run_file))
        stored_keys, new_keys = flatten(stored.get("config", {})), flatten(resolved.data)
        changed = diff(stored.get("config", {}), resolved.data)
        # keys that this version of tunesmith added or removed since the run started carry no user choice:
        # an added key holds its default (a user override would have changed the signature)
        added = {k for k in changed if k not in stored_keys or k not in new_keys}
        if added:
            log.info("config keys new or gone since this run started (defaults used): %s", ", ".join(sorted(added)))
        math_changed = {k: v for k, v in changed.items() if is_math_key(k) and k not in added}
        if math_changed:
            lines = [f"  {k}: run has {old!r}, now {new!r}" for k, (old, new) in math_changed.items()]
            message = (
                f"run {run_dir} was started with a different resolved config (a preset default changed?):\n"
                + "\n".join(lines)
            )
            if not force:
                raise ConfigError(message + "\nResume with --force to accept the new values, or --fresh to restart.")
            log.warning("%s\n--force: continuing with the new values", message)
        if changed and is_main:
            stored["config"] = resolved.data
            stored["updated_at"] = _now()
            _write_run_file(run_file, stored)
    elif is_main:
        _write_run_file(
            run_file,
            {
                "task": resolved.task,
                "preset": preset_name(resolved.preset),
                "signature": sig,
                "delta": math_delta(resolved),
                "config": resolved.data,
                "created_at": _now(),
                "tunesmith_version": __version__,
            },
        )
    return Run(resolved.task, preset_name(resolved.preset), sig, run_dir, resolved.data, force=force)


def _write_run_file(path: Path, data: dict) -> None:
    """run.json, or one line naming the folder when it cannot be written (read-only, full, forbidden)."""
    from tunesmith.errors import UserError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, data)
    except OSError as err:
        raise UserError(
            f"cannot write {path} ({err.strerror or err}); nothing was changed: make the run folder writable, "
            "free some space, or pass --runs-dir"
        ) from None


def find_run(ref: str | Path, runs_dir: Path | None = None) -> Path:
    """A run folder from a path, ``task/sig`` or a bare (prefix of a) signature."""
    from tunesmith.errors import UserError

    path = Path(ref)
    if (path / RUN_FILE).is_file():
        return path
    runs_dir = Path(runs_dir or default_runs_dir())
    if (runs_dir / path / RUN_FILE).is_file():
        return runs_dir / path
    matches = [p.parent for p in runs_dir.glob(f"*/{ref}*/{RUN_FILE}")]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"{ref!r} matches several runs: " + ", ".join(str(m) for m in matches))
    raise UserError(f"no run {ref!r} under {runs_dir} (see `tunesmith runs list`)")


def list_runs(runs_dir: Path | None = None) -> list[dict]:
    runs_dir = Path(runs_dir or default_runs_dir())
    rows = []
    for run_file in sorted(runs_dir.glob(f"*/*/{RUN_FILE}")):
        info = run_info(run_file.parent)
        rows.append(info)
    return rows


def run_info(run_dir: Path) -> dict:
    """Summary of a run: config delta, status, epoch/step, best metric, last checkpoint, wall time."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / RUN_FILE) or {}
    status = read_json(run_dir / STATUS_FILE) or {}
    last = run_dir / "checkpoints" / "last"
    return {
        "dir": str(run_dir),
        "task": meta.get("task"),
        "preset": meta.get("preset"),
        "signature": meta.get("signature"),
        "delta": meta.get("delta", {}),
        "status": status.get("state", "created"),
        "epoch": status.get("epoch", 0),
        "step": status.get("step", 0),
        "best": status.get("best"),
        "last_checkpoint": str(last) if last.is_dir() else None,
        "wall_time_s": status.get("wall_time_s", 0.0),
        "created_at": meta.get("created_at"),
        "updated_at": status.get("updated_at"),
    }


class Stopwatch:
    def __init__(self, offset: float = 0.0):
        self.offset = offset
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.offset + time.perf_counter() - self.start
