"""The local model directories the generation metrics read: what kind of model a folder holds, its
weights' hash, and the one message that says which kind of model to put where.

Nothing is downloaded: every metric model is a folder saved by transformers' ``save_pretrained``
(config.json + weights + preprocessor/tokenizer files) that the user points at with a flag or a
config key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

# metric → (what it needs, the flag, the config key)
NEEDS: dict[str, tuple[str, str, str]] = {
    "fad": (
        "an audio encoder: a CLAP (ClapModel), AST, wav2vec2, HuBERT, WavLM or Whisper directory saved with "
        "save_pretrained (with its preprocessor_config.json), or a tunesmith/EnCodec codec run or model dir",
        "--embedder-dir",
        "evaluate.embedder_dir",
    ),
    "clap": (
        "a CLAP model (transformers ClapModel directory with its processor: preprocessor_config.json and tokenizer)",
        "--clap-dir",
        "evaluate.clap_dir",
    ),
    "kld": (
        "an audio classifier (e.g. an AST fine-tuned on AudioSet: a transformers directory loadable with "
        "AutoModelForAudioClassification, with its preprocessor_config.json)",
        "--classifier-dir",
        "evaluate.classifier_dir",
    ),
    "wer": (
        "a Whisper model (transformers WhisperForConditionalGeneration directory with its processor)",
        "--whisper-dir",
        "evaluate.whisper_dir",
    ),
}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def where_to_put(metric: str) -> str:
    """``put <kind of model> in a folder and pass it with <flag> (or <config key>)``."""
    need, flag, key = NEEDS[metric]
    return f"put {need} in a local folder and pass it with {flag} (config key {key})"


def read_hf_config(path: str | Path) -> dict[str, Any] | None:
    """``config.json`` of a transformers directory, or None when there is none or it is not JSON."""
    file = Path(path) / "config.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def describe_found(path: str | Path) -> str:
    """What ``path`` holds, in words, for error messages."""
    p = Path(path)
    if not p.exists():
        return "nothing (no such folder)"
    if not p.is_dir():
        return "a file, not a folder"
    config = read_hf_config(p)
    if config is None:
        if (p / "checkpoints").is_dir():
            return "a tunesmith run folder"
        return "a folder without a transformers config.json"
    kind = config.get("model_type") or "unknown"
    arch = ", ".join(config.get("architectures") or []) or "no architectures listed"
    return f"a transformers model of type {kind!r} ({arch})"


def require_model_type(path: str | Path, metric: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The config of ``path`` when its ``model_type`` is one of ``allowed``; else a UserError naming what
    was found and what kind of model the metric needs (and where to put it)."""
    p = Path(path)
    config = read_hf_config(p) if p.is_dir() else None
    if config is None or config.get("model_type") not in allowed:
        raise UserError(f"{metric}: {p} holds {describe_found(p)}; {where_to_put(metric)}")
    if not (p / "preprocessor_config.json").is_file():
        raise UserError(
            f"{metric}: {p} has no preprocessor_config.json (the feature extractor); save the processor next to "
            "the model (processor.save_pretrained(DIR))"
        )
    return config


def weights_hash(path: str | Path) -> str:
    """sha256 over a model folder's config.json, preprocessor_config.json and weight files (names and bytes)."""
    from tunesmith.fileio import sha256_file

    p = Path(path)
    digest = hashlib.sha256()
    files = [f for f in sorted(p.iterdir()) if f.is_file()]
    for f in files:
        if f.name in ("config.json", "preprocessor_config.json") or f.suffix in WEIGHT_SUFFIXES:
            digest.update(f"{f.name}|{sha256_file(f)}|".encode())
    return digest.hexdigest()
