"""``tunesmith train --from SIG key=value``: a new run from a stored run's config plus changes."""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path
from typing import Any

from tunesmith.artifacts.runs import RUN_FILE, find_run, read_json
from tunesmith.config import parse_overrides, rename_nested, renamed_keys
from tunesmith.errors import UserError
from tunesmith.tasks import solver_class

log = logging.getLogger("tunesmith.launch")


def overrides_from_run(ref: str, changes: list[str], runs_dir: Path | None = None) -> tuple[str, str, dict[str, Any]]:
    """(task, preset, overrides): every key of the stored run's resolved config, then ``changes``.

    Keys equal to the preset's current defaults drop out of the signature as usual; keys this version
    of tunesmith no longer has are skipped (logged)."""
    run_dir = find_run(ref, runs_dir)
    stored = read_json(run_dir / RUN_FILE)
    if not stored or "config" not in stored or "task" not in stored:
        raise UserError(f"{run_dir / RUN_FILE}: not a readable run file (no task or config)")
    task, preset = stored["task"], stored.get("preset") or ""
    cls = solver_class(task)
    config = rename_nested(stored["config"], renamed_keys(cls), str(run_dir / RUN_FILE))
    kept: dict[str, Any] = {}
    gone: list[str] = []
    _leaves(cls.config_class, config, "", kept, gone)
    if gone:
        log.info("keys of %s that this version does not have (skipped): %s", run_dir, ", ".join(gone))
    return task, preset, {**kept, **parse_overrides(changes)}


def _leaves(cls: type, data: dict, prefix: str, kept: dict[str, Any], gone: list[str]) -> None:
    """Dotted key → value of every non-section field of dataclass ``cls`` present in ``data``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            gone.append(key)
        elif dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            _leaves(hints[name], value, key + ".", kept, gone)
        else:
            kept[key] = value
