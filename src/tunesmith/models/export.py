"""Model directories: what `tunesmith export` writes and every loader checks.

``tunesmith`` flavour::

    config.json      {"model_type": "tunesmith-<task>", "format_version": 1, "meta": {...}, "config": {...}}
    model.safetensors
    manifest.json    sha256 + size of every file

The same layout as a checkpoint folder minus the training state, so every loader that
accepts a checkpoint accepts an exported model. Hugging Face flavoured directories
(``model_type: "musicgen"``) are checked by ``tunesmith.models.hf`` when it is installed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TUNESMITH_PREFIX = "tunesmith-"


def export_tunesmith(source: str | Path, out: str | Path, *, which: str = "best", ema: bool | None = None) -> Path:
    """Write a tunesmith model directory from a run, checkpoint or model dir (EMA weights preferred)."""
    folder = ckpt.find_checkpoint(source, which=which)
    config = ckpt.read_config(folder)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = ckpt.load_weights(folder, "model", ema=ema)
    ckpt.save_tensors(tmp / ckpt.WEIGHTS, weights)
    task = (config.get("meta") or {}).get("task") or config.get("model_type", "").removeprefix(TUNESMITH_PREFIX)
    exported = {
        "model_type": config.get("model_type") or f"{TUNESMITH_PREFIX}{task}",
        "format_version": FORMAT_VERSION,
        "meta": {**(config.get("meta") or {}), "exported_from": str(folder)},
        "config": config.get("config", {}),
    }
    for extra in config.get("files", []):  # side files a task keeps with its weights (tokenizers…)
        shutil.copy2(folder / extra, tmp / extra)
    if config.get("files"):
        exported["files"] = config["files"]
    if task == "lm":
        _copy_lm_companions(exported["config"], folder, tmp)
    (tmp / ckpt.CONFIG).write_text(json.dumps(exported, indent=2, sort_keys=True) + "\n")
    ckpt.write_manifest(tmp, {"model_type": exported["model_type"]})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _copy_lm_companions(config: dict, folder: Path, out: Path) -> None:
    """An LM needs its codec (and a T5 text encoder when it uses one): put them inside the export
    as ``codec/`` and ``t5/``, where the generator looks first, so the directory stands on its own."""
    from tunesmith.models.codec.loading import resolve_codec_path

    if (folder / "codec").is_dir():
        shutil.copytree(folder / "codec", out / "codec")
    elif config.get("codec"):
        run_dir = folder.parent.parent if folder.parent.name == "checkpoints" else None
        codec = resolve_codec_path(str(config["codec"]), folder, run_dir)
        if codec is None:
            log.warning(
                "export: the LM's codec %r was not found; the export will need --codec to generate", config["codec"]
            )
        elif (codec / "checkpoints").is_dir() or (codec / ckpt.STATE).is_file():
            export_tunesmith(codec, out / "codec")
        else:
            shutil.copytree(codec, out / "codec")
    conditioner = (config.get("model") or {}).get("conditioner") or {}
    t5 = Path(str(conditioner.get("t5_path") or ""))
    if conditioner.get("text") == "t5":
        source = folder / "t5" if (folder / "t5").is_dir() else t5
        if source.is_dir():
            shutil.copytree(source, out / "t5")


def verify_model_dir(path: str | Path) -> list[str]:
    """Every problem with a model or checkpoint directory, named precisely; empty when sound."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: not a directory"]
    config_path = path / ckpt.CONFIG
    if not config_path.is_file():
        return [f"{path}: config.json is missing"]
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        return [f"{config_path}: not valid JSON ({err}); the file is corrupted or truncated"]
    if not isinstance(config, dict):
        return [f"{config_path}: must hold a JSON object"]
    model_type = config.get("model_type")
    if not model_type:
        return [f"{config_path}: config.json has no model_type (expected 'musicgen' or 'tunesmith-<task>')"]
    problems: list[str] = []
    if model_type.startswith(TUNESMITH_PREFIX):
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
    try:
        from tunesmith.models.hf.verify import verify_hf_dir
    except ImportError:
        return [f"{config_path}: model_type {model_type!r} is not a tunesmith model"]
    return verify_hf_dir(path)


def require_valid(path: str | Path) -> Path:
    problems = verify_model_dir(path)
    if problems:
        raise UserError("model directory check failed:\n  - " + "\n  - ".join(problems))
    return Path(path)
