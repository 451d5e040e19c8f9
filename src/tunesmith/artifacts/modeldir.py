"""The tunesmith model-directory format: what `tunesmith export` writes and every loader checks.

``tunesmith`` flavour::

    config.json      {"model_type": "tunesmith-<task>", "format_version": 1, "meta": {...}, "config": {...}}
    model.safetensors
    manifest.json    sha256 + size of every file

The same layout as a checkpoint folder minus the training state, so every loader that accepts a
checkpoint accepts an exported model. Writing one with model companions (an LM's codec/ and t5/) and
checking Hugging Face flavoured directories need model knowledge: see ``tunesmith.models.export``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.artifacts import checkpoint as ckpt

FORMAT_VERSION = 1
TUNESMITH_PREFIX = "tunesmith-"

Companions = Callable[[dict[str, Any], Path, Path], None]  # (exported "config" section, checkpoint, out)


def task_of(config: dict[str, Any]) -> str:
    """The task of a checkpoint's or model directory's config.json (``meta.task``, else from ``model_type``)."""
    return (config.get("meta") or {}).get("task") or config.get("model_type", "").removeprefix(TUNESMITH_PREFIX)


def write_model_dir(folder: Path, out: Path, *, ema: bool | None = None, companions: Companions | None = None) -> dict:
    """Fill the empty folder ``out`` with the model directory of checkpoint ``folder`` (EMA weights preferred);
    ``companions`` adds sub-folders before the manifest is written. Returns the written config.json."""
    config = ckpt.read_config(folder)
    ckpt.save_tensors(out / ckpt.WEIGHTS, ckpt.load_weights(folder, "model", ema=ema))
    exported = {
        "model_type": config.get("model_type") or f"{TUNESMITH_PREFIX}{task_of(config)}",
        "format_version": FORMAT_VERSION,
        "meta": {**(config.get("meta") or {}), "exported_from": str(folder)},
        "config": config.get("config", {}),
    }
    for extra in config.get("files", []):  # side files a task keeps with its weights (tokenizers…)
        shutil.copy2(folder / extra, out / extra)
    if config.get("files"):
        exported["files"] = config["files"]
    if companions is not None:
        companions(exported["config"], folder, out)
    (out / ckpt.CONFIG).write_text(json.dumps(exported, indent=2, sort_keys=True) + "\n")
    ckpt.write_manifest(out, {"model_type": exported["model_type"]})
    return exported


def read_model_config(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """(config.json with a ``model_type``, []) or (None, the problems that stop any further check)."""
    if not path.is_dir():
        return None, [f"{path}: not a directory"]
    config_path = path / ckpt.CONFIG
    if not config_path.is_file():
        return None, [f"{path}: config.json is missing"]
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        return None, [f"{config_path}: not valid JSON ({err}); the file is corrupted or truncated"]
    if not isinstance(config, dict):
        return None, [f"{config_path}: must hold a JSON object"]
    if not config.get("model_type"):
        return None, [f"{config_path}: config.json has no model_type (expected 'musicgen' or 'tunesmith-<task>')"]
    return config, []


def is_tunesmith_config(config: dict[str, Any]) -> bool:
    return str(config.get("model_type", "")).startswith(TUNESMITH_PREFIX)


def verify_tunesmith_dir(path: Path, config: dict[str, Any]) -> list[str]:
    """Problems of a tunesmith-flavour model directory whose config.json is ``config``; empty when sound."""
    config_path = path / ckpt.CONFIG
    problems: list[str] = []
    if config.get("format_version", 0) > FORMAT_VERSION:
        problems.append(
            f"{config_path}: format_version {config['format_version']} is newer than this "
            f"tunesmith understands ({FORMAT_VERSION}); upgrade tunesmith"
        )
    if "config" not in config:
        problems.append(f"{config_path}: no 'config' section")
    if not (path / ckpt.WEIGHTS).is_file():
        problems.append(f"{path}: {ckpt.WEIGHTS} is missing")
    problems.extend(ckpt.verify_folder(path))
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and (p / ckpt.MANIFEST).is_file()):
        problems.extend(ckpt.verify_folder(sub))  # codec/, t5/ carried inside an LM export
    return problems
