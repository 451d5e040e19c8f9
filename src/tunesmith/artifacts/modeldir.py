"""The tunesmith model-directory format: what `tunesmith export` writes and every loader checks.

``tunesmith`` flavour::

    config.json      {"model_type": "tunesmith-<task>", "format_version": 1, "meta": {...}, "config": {...}}
    model.safetensors
    manifest.json    sha256 + size of every file

The same layout as a checkpoint folder minus the training state, so every loader that accepts a
checkpoint accepts an exported model. :func:`guard_output` is the one rule for replacing an existing
output folder (every writer calls it); :func:`side_files` keeps the files a config names inside its folder.
Writing one with model companions (an LM's codec/ and t5/) and
checking Hugging Face flavoured directories need model knowledge: see ``tunesmith.models.export``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.errors import UserError
from tunesmith.fileio import UnsafePathError, contained_path

FORMAT_VERSION = 1
TUNESMITH_PREFIX = "tunesmith-"
# what export --format hf, the codec copy of an import and the HiggsAudio v2 import/export write
WRITTEN_MODEL_TYPES = ("musicgen", "encodec", "higgs_audio_v2")
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA adapter folder (models.lm.lora)

Companions = Callable[[dict[str, Any], Path, Path], None]  # (exported "config" section, checkpoint, out)


def task_of(config: dict[str, Any]) -> str:
    """The task of a checkpoint's or model directory's config.json (``meta.task``, else from ``model_type``)."""
    meta = config.get("meta") if isinstance(config.get("meta"), dict) else {}
    return meta.get("task") or str(config.get("model_type") or "").removeprefix(TUNESMITH_PREFIX)


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
    for extra in side_files(folder, config):  # side files a task keeps with its weights (tokenizers…)
        target = contained_path(out, extra)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(contained_path(folder, extra), target)
    if config.get("files"):
        exported["files"] = config["files"]
    if companions is not None:
        companions(exported["config"], folder, out)
    (out / ckpt.CONFIG).write_text(json.dumps(exported, indent=2, sort_keys=True) + "\n")
    ckpt.write_manifest(out, {"model_type": exported["model_type"]})
    return exported


def side_files(folder: Path, config: dict[str, Any]) -> list[str]:
    """The side files a config.json lists (``files``), each checked to stay inside ``folder``; UserError
    naming the first that does not."""
    files = config.get("files") or []
    if not isinstance(files, list):
        raise UserError(f"{folder / ckpt.CONFIG}: 'files' must be a list of file names")
    for name in files:
        try:
            contained_path(folder, name)
        except UnsafePathError as err:
            raise UserError(f"{folder / ckpt.CONFIG}: 'files' lists {err}; refusing to read or write it") from None
    return list(files)


def read_model_config(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """(config.json as a dict, problems with its ``model_type`` and ``format_version``), or (None, the
    problems that stop any further check: no folder, no config.json, not a JSON object)."""
    if not path.is_dir():
        return None, [f"{path}: not a directory"]
    config_path = path / ckpt.CONFIG
    if not config_path.is_file():
        return None, [f"{path}: config.json is missing"]
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        return None, [f"{config_path}: not valid JSON ({err}); the file is corrupted or truncated"]
    if not isinstance(config, dict):
        return None, [f"{config_path}: must hold a JSON object"]
    problems = []
    model_type = config.get("model_type")
    if not model_type:
        problems.append(f"{config_path}: config.json has no model_type (expected 'musicgen' or 'tunesmith-<task>')")
    elif not isinstance(model_type, str):
        problems.append(
            f"{config_path}: model_type={model_type!r} is not a string (expected 'musicgen' or 'tunesmith-<task>')"
        )
    version = config.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problems.append(
            f"{config_path}: format_version={version!r} must be a whole number such as {FORMAT_VERSION} "
            "(not a string); the file was edited by hand or written by another tool"
        )
    elif version > FORMAT_VERSION:
        problems.append(
            f"{config_path}: format_version {version} is newer than this tunesmith understands "
            f"({FORMAT_VERSION}); upgrade tunesmith"
        )
    return config, problems


def is_tunesmith_config(config: dict[str, Any]) -> bool:
    return str(config.get("model_type", "")).startswith(TUNESMITH_PREFIX)


def verify_manifests(path: Path) -> list[str]:
    """Checksums of ``path`` (when it has a manifest) and of every sub-folder carrying one (codec/, t5/)."""
    problems = ckpt.verify_folder(path) if (path / ckpt.MANIFEST).is_file() else []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and (p / ckpt.MANIFEST).is_file()):
        problems.extend(ckpt.verify_folder(sub))
    return problems


def verify_tunesmith_dir(path: Path, config: dict[str, Any]) -> list[str]:
    """Problems of a tunesmith-flavour model directory whose config.json is ``config`` (the model_type and
    format_version checks are :func:`read_model_config`'s); empty when sound."""
    config_path = path / ckpt.CONFIG
    problems: list[str] = []
    if "config" not in config:
        problems.append(f"{config_path}: no 'config' section")
    if not (path / ckpt.WEIGHTS).is_file():
        problems.append(f"{path}: {ckpt.WEIGHTS} is missing")
    try:
        side_files(path, config)
    except UserError as err:
        problems.append(str(err))
    if not (path / ckpt.MANIFEST).is_file():
        problems.append(f"{path}: {ckpt.MANIFEST} is missing (incomplete or not a tunesmith folder)")
    problems.extend(verify_manifests(path))
    return problems


# --------------------------------------------------------------------------- replacing an output folder


def written_by_tunesmith(folder: Path) -> str | None:
    """None when ``folder`` is a model or adapter directory tunesmith wrote (a readable manifest listing
    every file there, and a config saying tunesmith or MusicGen); else why it is not."""
    manifest = folder / ckpt.MANIFEST
    try:
        listed = json.loads(manifest.read_text())["files"]
        if not isinstance(listed, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        return f"it has no readable {ckpt.MANIFEST}"
    if (folder / ckpt.STATE).exists():
        return "it is a training checkpoint"
    config = read_json_dict(folder / ckpt.CONFIG) or read_json_dict(folder / ADAPTER_CONFIG) or {}
    model_type = str(config.get("model_type", ""))
    if not (model_type.startswith(TUNESMITH_PREFIX) or model_type in WRITTEN_MODEL_TYPES or "tunesmith" in config):
        return "its config does not say tunesmith wrote it"
    return _unlisted_entry(folder, listed)


def _unlisted_entry(folder: Path, listed: dict) -> str | None:
    """Why ``folder`` holds something its manifest does not account for (None: it does not). A sub-folder
    (codec/, t5/) counts when its own manifest lists everything in it: a part of a model directory tunesmith
    wrote carries the part's own config (a T5 encoder's says t5), not tunesmith's."""
    for entry in folder.iterdir():
        if entry.name in listed or entry.name == ckpt.MANIFEST:
            continue
        if entry.is_dir() and not entry.is_symlink():
            try:
                inner = json.loads((entry / ckpt.MANIFEST).read_text())["files"]
            except (OSError, ValueError, KeyError, TypeError):
                inner = None
            complete = isinstance(inner, dict) and not (entry / ckpt.STATE).exists()
            if complete and _unlisted_entry(entry, inner) is None:
                continue
        return f"it holds {entry.name}, which its manifest does not list"
    return None


def guard_output(out: Path, *, force: bool, flag: str = "--out") -> None:
    """Refuse to replace ``out`` unless it is absent, an empty folder, or a model directory tunesmith wrote
    and ``force`` is given; the UserError names the folder and what to do. Nothing is deleted here."""
    out = Path(out)
    for folder in (out, out.with_name(out.name + ".prev")):  # the swap's old copy would be removed too
        if not folder.exists() and not folder.is_symlink():
            continue
        if folder.is_symlink() or not folder.is_dir():
            raise UserError(
                f"{folder}: exists and is not a folder tunesmith wrote; nothing was changed. "
                f"Choose another {flag}, or move it away yourself"
            )
        if not any(folder.iterdir()):
            continue
        reason = written_by_tunesmith(folder)
        if reason is not None:
            raise UserError(
                f"{folder}: already exists and is not a model directory tunesmith wrote ({reason}); nothing "
                f"was changed. Choose another {flag} (a new or empty folder), or move this one away yourself"
            )
        if not force:
            raise UserError(
                f"{folder}: already holds a model directory; pass --force to replace it, or choose another {flag}"
            )


def read_json_dict(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
