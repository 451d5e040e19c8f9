"""Load a codec from a run folder, checkpoint folder or model directory; fingerprint it.

Other model families plug in through :func:`register_codec_loader`: a predicate on the path and a
loader. Directories whose ``config.json`` has ``model_type`` ``"encodec"`` or ``"musicgen"``
(transformers' format) are handed to such a loader; the modules in :data:`PLUGIN_MODULES` are
imported on first need so that their registrations run.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunesmith.errors import UserError
from tunesmith.models.codec.model import CodecModel, build_codec_model
from tunesmith.models.codec.protocol import Codec

log = logging.getLogger(__name__)

CodecPredicate = Callable[[Path], bool]
CodecLoader = Callable[[Path, "float | None", str], Codec]

_LOADERS: list[tuple[CodecPredicate, CodecLoader]] = []
HF_MODEL_TYPES: tuple[str, ...] = ("encodec", "musicgen", "musicgen_melody")
PLUGIN_MODULES: tuple[str, ...] = ("tunesmith.models.hf",)
_plugins_imported = False


def register_codec_loader(predicate: CodecPredicate, loader: CodecLoader) -> None:
    """Let ``load_codec(path)`` return ``loader(path, bandwidth, device)`` whenever ``predicate(path)`` is true.

    Later registrations are tried first. ``loader`` must honour ``bandwidth`` (None = the model's default).
    """
    _LOADERS.insert(0, (predicate, loader))


def model_type(path: Path) -> str | None:
    """``model_type`` of ``path/config.json`` when it is a JSON object that has one, else None."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("model_type") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _import_plugins() -> None:
    global _plugins_imported
    if _plugins_imported:
        return
    _plugins_imported = True
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:  # optional extras (transformers) may be missing
            log.debug("codec plugin %s not available: %s", name, err)


def _registered_loader(path: Path) -> CodecLoader | None:
    for predicate, loader in _LOADERS:
        try:
            if predicate(path):
                return loader
        except OSError:
            continue
    return None


def codec_config_from(config: dict, where: Path) -> dict:
    """The ``model`` section of a codec checkpoint's or model directory's ``config.json``."""
    meta = config.get("meta") if isinstance(config.get("meta"), dict) else {}
    task = meta.get("task") or config.get("task")
    if task and task != "codec":
        raise UserError(f"{where}: this is a {task!r} model, not a codec; pass a codec run or model directory")
    data = config.get("config", config)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise UserError(f"{where}: config.json has no codec 'model' section; is it a tunesmith codec?")
    return model


def load_codec(path: str | Path, bandwidth: float | None = None, device: str | torch.device = "cpu") -> Codec:
    """A codec ready for inference (eval mode, on ``device``) from a run folder (its best checkpoint),
    a checkpoint folder, an exported tunesmith model directory, or a registered third-party directory.

    ``bandwidth`` in kbps (None = all codebooks); UserError listing the supported ones for any other.
    EMA weights are used when the checkpoint has them.
    """
    from tunesmith.artifacts import checkpoint as ckpt

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such codec run, checkpoint or model directory")
    loader = _registered_loader(path)
    if loader is None and model_type(path) in HF_MODEL_TYPES:
        _import_plugins()
        loader = _registered_loader(path)
        if loader is None:
            raise UserError(
                f"{path}: a transformers {model_type(path)!r} directory needs tunesmith's Hugging Face support "
                "(pip install 'tunesmith[hf]')"
            )
    if loader is not None:
        return loader(path, bandwidth, str(device))
    folder = ckpt.find_checkpoint(path, which="best")
    model = build_codec_model(codec_config_from(ckpt.read_config(folder), folder))
    weights = ckpt.load_weights(folder, "model")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{folder}: weights do not match the codec config (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    model.eval().to(device)
    if bandwidth is not None:
        model.set_bandwidth(bandwidth)
    model.source = str(folder)  # type: ignore[attr-defined]
    return model


def _state_of(codec: Any) -> dict[str, torch.Tensor]:
    for candidate in (codec, getattr(codec, "model", None)):
        if isinstance(candidate, nn.Module):
            return candidate.state_dict()
    raise UserError(f"cannot fingerprint codec of type {type(codec).__name__}: it exposes no weights (state_dict)")


def codec_fingerprint(codec: Codec) -> str:
    """sha256 (hex) of the codec's kind, config, current bandwidth and every weight and buffer.

    Two codecs share a fingerprint exactly when they turn the same audio into the same codes, so it
    keys the token cache.
    """
    config = codec.config_dict() if hasattr(codec, "config_dict") else getattr(codec, "config", None)
    if config is not None and not isinstance(config, dict):
        config = config.to_dict() if hasattr(config, "to_dict") else repr(config)
    description = {
        "kind": f"{type(codec).__module__}.{type(codec).__qualname__}",
        "sample_rate": int(codec.sample_rate),
        "channels": int(codec.channels),
        "frame_rate": float(codec.frame_rate),
        "bins": int(codec.bins),
        "n_q": int(codec.n_q),
        "config": config,
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    state = _state_of(codec)
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


__all__ = [
    "CodecModel",
    "codec_config_from",
    "codec_fingerprint",
    "load_codec",
    "model_type",
    "register_codec_loader",
]


def resolve_codec_path(value: str, checkpoint: Path, run_dir: Path | None) -> Path | None:
    """The codec an LM's config names (``value``), found as given, from the working directory, the
    checkpoint folder, or the run folder and its parents; None when it is nowhere. Only a folder that
    can hold a codec counts (a run with ``checkpoints/``, or a folder with ``config.json``), so a
    ``runs/codec`` task folder met while walking up never stands in for a codec named ``codec``."""
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, checkpoint / path]
    if run_dir is not None and not path.is_absolute():
        candidates += [run_dir / path, *(parent / path for parent in run_dir.parents)]
    return next((c for c in candidates if _may_hold_codec(c)), None)


def _may_hold_codec(path: Path) -> bool:
    return path.is_dir() and ((path / "checkpoints").is_dir() or (path / "config.json").is_file())
