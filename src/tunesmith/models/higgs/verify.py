"""Check a HiggsAudio v2 folder (a transformers one, an import, an export) and name every problem precisely.

``tunesmith verify DIR`` reaches :func:`verify_higgs_dir` for ``model_type: "higgs_audio_v2"`` folders (through
:func:`tunesmith.models.hf.verify.verify_hf_dir`). Every check that can run does, so one damaged file never
hides another:

- ``manifest.json`` (what tunesmith writes on import and export): every listed file present, of the listed
  size and sha256 — ``audio_tokenizer/`` included; without one, each safetensors file's header is checked
  against its size (truncation) instead;
- config.json: the model type and the fields tunesmith reads; the weights hold exactly the tensors a model
  built from that config has, with the same shapes (from the headers only; ``text_lm_head`` optional);
- the text tokenizer files are there and readable;
- processor_config.json readable, its stream ids agreeing with config.json;
- the audio tokenizer is found (:func:`tunesmith.models.higgs.checkpoint.resolve_audio_tokenizer`), makes as
  many codebooks as the model reads, its codes fit below the stream ids, and its weights match its config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.models.higgs.checkpoint import (
    MODEL_TYPE,
    PROCESSOR_CONFIG,
    resolve_audio_tokenizer,
)
from tunesmith.models.higgs.tokenizer_config import HiggsTokenizerConfig

MANIFEST = "manifest.json"
CONFIG = "config.json"
TEXT_TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json")
_POSITIVE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "num_codebooks")
_TENSOR_PROBLEMS_SHOWN = 5


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as err:
        return None, f"{path}: not valid JSON ({err}); the file is corrupted or truncated"


def check_manifests(folder: Path) -> list[str]:
    """The top-level manifest (sub-folder files listed by relative path) and, for a sub-folder it does not
    cover, that sub-folder's own manifest (an ``audio_tokenizer/`` copied in by hand keeps its own)."""
    from tunesmith.artifacts.checkpoint import manifest_problems

    problems: list[str] = []
    listed: dict = {}
    if (folder / MANIFEST).is_file():
        problems.extend(manifest_problems(folder))
        data, _ = _read_json(folder / MANIFEST)
        listed = data.get("files", {}) if isinstance(data, dict) and isinstance(data.get("files"), dict) else {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).is_file()):
        if not any(str(name).startswith(f"{sub.name}/") for name in listed):
            problems.extend(manifest_problems(sub))
    return problems


def check_weight_files(folder: Path, what: str) -> tuple[list[str], bool]:
    """(problems, all weights readable) for the safetensors of ``folder``: present and complete by header."""
    from tunesmith.models.hf.hfdir import weight_file_problems, weight_files

    try:
        files = weight_files(folder)
    except UserError as err:
        return [f"{what}: {err}"], False
    problems = weight_file_problems(folder, files)
    return problems, not problems


def check_model_config(config: dict[str, Any], config_path: Path) -> list[str]:
    problems = []
    for key in _POSITIVE_KEYS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            problems.append(f"{config_path}: {key}={value!r}: expected a positive integer")
    return problems


def expected_tensors(config_path: Path, with_text_head: bool) -> dict[str, list[int]]:
    """name → shape of every tensor ``HiggsAudioV2ForConditionalGeneration`` built from ``config_path`` holds
    (built on the meta device: no memory, no weights read)."""
    import torch
    from transformers import HiggsAudioV2Config, HiggsAudioV2ForConditionalGeneration

    config = HiggsAudioV2Config.from_json_file(str(config_path))
    with torch.device("meta"):
        model = HiggsAudioV2ForConditionalGeneration(config, use_text_head=with_text_head)
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def check_tensors(folder: Path, config_path: Path) -> list[str]:
    """The weights hold exactly the model's tensors with its shapes (``text_lm_head`` optional)."""
    from tunesmith.models.hf.hfdir import tensor_names

    try:
        found = tensor_names(folder)
    except UserError as err:
        return [str(err)]
    try:
        expected = expected_tensors(config_path, "text_lm_head.weight" in found)
    except Exception as err:  # transformers rejects the config: say so, do not crash verify
        return [f"{config_path}: transformers cannot build a HiggsAudio v2 model from it ({err})"]
    problems = []
    for name, shape in expected.items():
        if name not in found:
            problems.append(f"{folder}: weights lack {name}")
        elif found[name][0] != shape:
            problems.append(f"{folder}: {name} has shape {found[name][0]}, config.json needs {shape}")
    problems += [
        f"{folder}: weights hold {name}, which config.json's model does not have"
        for name in found
        if name not in expected
    ]
    if len(problems) > _TENSOR_PROBLEMS_SHOWN:
        rest = len(problems) - _TENSOR_PROBLEMS_SHOWN
        problems = [*problems[:_TENSOR_PROBLEMS_SHOWN], f"{folder}: ({rest} further tensor problems not listed)"]
    return problems


def check_text_tokenizer(folder: Path) -> list[str]:
    present = [name for name in TEXT_TOKENIZER_MARKERS if (folder / name).is_file()]
    if not present:
        return [
            f"{folder}: no text tokenizer (tokenizer.json / tokenizer_config.json); copy them from the original "
            "download (they come with the model)"
        ]
    return [err for name in present if (err := _read_json(folder / name)[1])]


def check_audio_tokenizer(
    folder: Path, config: dict[str, Any], processor: dict[str, Any], override: str | Path | None
) -> list[str]:
    """The audio tokenizer: found, its config readable, codebook count and ids agreeing with the model, its
    weights complete and matching its config."""
    from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

    try:
        tok_dir = resolve_audio_tokenizer(folder, processor, override)
    except UserError as err:
        return [f"missing audio tokenizer: {err}"]
    tok_config_path = tok_dir / CONFIG
    raw, err = _read_json(tok_config_path)
    if err:
        return [err]
    try:
        tok_config = HiggsTokenizerConfig.from_dict(raw, source=str(tok_config_path))
    except UserError as err:
        return [str(err)]
    problems = []
    num_codebooks = int(config.get("num_codebooks", 8))
    if tok_config.num_quantizers != num_codebooks:
        problems.append(
            f"{folder}: codebook count mismatch — config.json has num_codebooks={num_codebooks}, the audio "
            f"tokenizer {tok_dir} makes {tok_config.num_quantizers} ({tok_config_path})"
        )
    bos, eos = int(config.get("audio_stream_bos_id", 1024)), int(config.get("audio_stream_eos_id", 1025))
    size = int(config.get("codebook_size", 1024))
    if not tok_config.codebook_size <= min(bos, eos) or max(bos, eos) >= size:
        problems.append(
            f"{folder}: audio ids do not fit — the audio tokenizer's codes are < {tok_config.codebook_size}, "
            f"stream BOS/EOS {bos}/{eos}, model codebook_size {size} (must hold codes and both stream ids)"
        )
    weight_problems, readable = check_weight_files(tok_dir, f"audio tokenizer {tok_dir}")
    problems.extend(weight_problems)
    if readable:
        try:
            load_higgs_tokenizer(tok_dir)
        except UserError as err:
            problems.append(f"audio tokenizer: {err}")
    return problems


def check_processor(folder: Path, config: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    path = folder / PROCESSOR_CONFIG
    if not path.is_file():
        return [], {}
    data, err = _read_json(path)
    if err:
        return [err], {}
    if not isinstance(data, dict):
        return [f"{path}: must hold a JSON object"], {}
    problems = []
    for key, default in (("audio_stream_bos_id", 1024), ("audio_stream_eos_id", 1025)):
        if key in data and data[key] != config.get(key, default):
            problems.append(
                f"{path}: {key}={data[key]} differs from config.json's {config.get(key, default)} "
                "(the processor would mark audio streams with other ids than the model predicts)"
            )
    return problems, data


def verify_higgs_dir(path: str | Path, *, audio_tokenizer: str | Path | None = None) -> list[str]:
    """Every problem of a HiggsAudio v2 folder (see the module docstring); empty when tunesmith and
    transformers can load it. ``audio_tokenizer`` names the audio tokenizer folder explicitly."""
    folder = Path(path)
    if not folder.is_dir():
        return [f"{folder}: not a directory"]
    config_path = folder / CONFIG
    if not config_path.is_file():
        return [f"{folder}: config.json is missing", *check_manifests(folder)]
    config, err = _read_json(config_path)
    if err:
        return [err, *check_manifests(folder)]
    if not isinstance(config, dict):
        return [f"{config_path}: must hold a JSON object", *check_manifests(folder)]
    if config.get("model_type") != MODEL_TYPE:
        return [f"{config_path}: model_type {config.get('model_type')!r} is not a HiggsAudio v2 model ({MODEL_TYPE!r})"]
    problems = check_manifests(folder)
    config_problems = check_model_config(config, config_path)
    problems.extend(config_problems)
    weight_problems, readable = check_weight_files(folder, str(folder))
    problems.extend(p for p in weight_problems if p not in problems)
    if readable and not config_problems:
        problems.extend(check_tensors(folder, config_path))
    problems.extend(check_text_tokenizer(folder))
    processor_problems, processor = check_processor(folder, config)
    problems.extend(processor_problems)
    if not config_problems:
        problems.extend(check_audio_tokenizer(folder, config, processor, audio_tokenizer))
    return list(dict.fromkeys(problems))


def verify_higgs_tokenizer_dir(path: str | Path) -> list[str]:
    """Every problem of a HiggsAudio v2 audio tokenizer folder on its own (manifest, config, weights complete
    and matching the config); empty when it loads."""
    from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

    folder = Path(path)
    if not folder.is_dir():
        return [f"{folder}: not a directory"]
    problems = check_manifests(folder)
    raw, err = _read_json(folder / CONFIG)
    if err:
        return [err, *problems]
    try:
        HiggsTokenizerConfig.from_dict(raw, source=str(folder / CONFIG))
    except UserError as err:
        return [str(err), *problems]
    weight_problems, readable = check_weight_files(folder, str(folder))
    problems.extend(weight_problems)
    if readable:
        try:
            load_higgs_tokenizer(folder)
        except UserError as err:
            problems.append(str(err))
    return list(dict.fromkeys(problems))


def require_higgs_dir(path: str | Path, *, audio_tokenizer: str | Path | None = None) -> Path:
    """``path`` when :func:`verify_higgs_dir` finds nothing wrong; else a UserError listing every problem."""
    problems = verify_higgs_dir(path, audio_tokenizer=audio_tokenizer)
    if problems:
        raise UserError(f"{path}: HiggsAudio v2 folder check failed:\n  - " + "\n  - ".join(problems))
    return Path(path)
