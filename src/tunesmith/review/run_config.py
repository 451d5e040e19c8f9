"""What a review reads from a run's resolved config: its task, nested sections, and paths the config
records (a dataset) resolved from the working directory or the run folder's parents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.review.checkpoints import list_checkpoints


def run_task(run_dir: Path) -> tuple[str, dict]:
    """(task, resolved config) of a run folder, from run.json or a checkpoint's config.json."""
    from tunesmith.artifacts.runs import RUN_FILE, read_json

    meta = read_json(run_dir / RUN_FILE)
    if meta and isinstance(meta.get("config"), dict):
        return str(meta.get("task")), meta["config"]
    for ref in list_checkpoints(run_dir):
        try:
            stored = json.loads((ref.folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        task = (stored.get("meta") or {}).get("task")
        if task and isinstance(stored.get("config"), dict):
            return str(task), stored["config"]
    raise UserError(f"{run_dir}: not a run folder ({RUN_FILE} and checkpoints are missing); see `tunesmith runs list`")


def config_section(config: dict, *keys: str) -> dict:
    node: Any = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def resolve_relative(value: str, run_dir: Path) -> Path | None:
    """A path recorded in a run config: absolute, or relative to the working directory or a parent of the run."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    for base in (Path.cwd(), run_dir, *run_dir.parents):
        if (base / path).exists():
            return base / path
    return None
