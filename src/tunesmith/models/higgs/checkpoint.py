"""Reading a transformers HiggsAudio v2 checkpoint folder: model config, processor settings, the audio tokenizer.

A checkpoint saved by transformers holds ``config.json`` (``model_type: "higgs_audio_v2"``), the weights,
the text tokenizer files, ``chat_template.jinja`` and ``processor_config.json``. The processor config
names the audio tokenizer by ``audio_tokenizer.audio_tokenizer_name_or_path`` *as written at save time*
— usually an absolute path on the machine that saved it, so a moved or copied checkpoint fails in
transformers with "Repo id must be in the form 'repo_name'…". tunesmith resolves it: an explicit
folder first, then the stored path if it still holds a tokenizer, then the same folder name inside the
checkpoint, ``audio_tokenizer/`` inside it, and the same name next to it — and logs which one it used
and why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.models.higgs.prompt import HiggsPromptBuilder, HiggsTokens
from tunesmith.models.higgs.tokenizer_config import MODEL_TYPE as TOKENIZER_MODEL_TYPE
from tunesmith.models.higgs.tokenizer_config import HiggsTokenizerConfig

log = logging.getLogger(__name__)

MODEL_TYPE = "higgs_audio_v2"
PROCESSOR_CONFIG = "processor_config.json"
AUDIO_TOKENIZER_SUBDIR = "audio_tokenizer"
_TOKEN_KEYS = ("audio_token", "audio_bos_token", "audio_eos_token", "audio_delay_token")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def is_audio_tokenizer_dir(path: Path) -> bool:
    """A folder whose ``config.json`` says ``model_type: "higgs_audio_v2_tokenizer"``."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == TOKENIZER_MODEL_TYPE
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def stored_audio_tokenizer_path(processor_config: dict[str, Any]) -> str | None:
    """``audio_tokenizer_name_or_path`` as the processor config stores it (nested or flat), else None."""
    nested = processor_config.get("audio_tokenizer")
    if isinstance(nested, dict) and nested.get("audio_tokenizer_name_or_path"):
        return str(nested["audio_tokenizer_name_or_path"])
    flat = processor_config.get("audio_tokenizer_name_or_path")
    return str(flat) if flat else None


def resolve_audio_tokenizer(
    checkpoint: Path, processor_config: dict[str, Any] | None, override: str | Path | None = None
) -> Path:
    """The audio tokenizer folder for ``checkpoint`` (see the module docstring for the order); logged."""
    if override is not None:
        path = Path(override).expanduser()
        if not is_audio_tokenizer_dir(path):
            raise UserError(
                f"{path}: not a HiggsAudio v2 audio tokenizer folder "
                f"(config.json with model_type {TOKENIZER_MODEL_TYPE!r})"
            )
        log.info("HiggsAudio audio tokenizer: %s (given explicitly)", path)
        return path
    stored = stored_audio_tokenizer_path(processor_config or {})
    tried: list[str] = []
    candidates: list[tuple[Path, str]] = []
    if stored:
        as_path = Path(stored).expanduser()
        direct = as_path if as_path.is_absolute() else checkpoint / as_path
        candidates.append((direct, f"stored in {PROCESSOR_CONFIG}"))
        name = as_path.name
        inside = f"{PROCESSOR_CONFIG} names {stored!r}; found a folder of that name inside the checkpoint"
        candidates.append((checkpoint / name, inside))
        if as_path.is_absolute():  # saved on another machine / before a move: the same name next to the checkpoint
            candidates.append(
                (
                    checkpoint.parent / name,
                    f"{PROCESSOR_CONFIG} names {stored!r}; found a folder of that name next to the checkpoint",
                )
            )  # (a relative path means "inside the folder": never an unrelated sibling)
    candidates.append((checkpoint / AUDIO_TOKENIZER_SUBDIR, f"the checkpoint's {AUDIO_TOKENIZER_SUBDIR}/ sub-folder"))
    for path, why in candidates:
        if is_audio_tokenizer_dir(path):
            if stored and path != candidates[0][0]:
                log.warning(
                    "HiggsAudio audio tokenizer: stored path %r does not hold a tokenizer here; using %s (%s)",
                    stored,
                    path,
                    why,
                )
            else:
                log.info("HiggsAudio audio tokenizer: %s (%s)", path, why)
            return path
        tried.append(str(path))
    hint = f" ({PROCESSOR_CONFIG} names {stored!r})" if stored else f" (no {PROCESSOR_CONFIG} entry)"
    raise UserError(
        f"{checkpoint}: no HiggsAudio v2 audio tokenizer found{hint}; looked in: {', '.join(dict.fromkeys(tried))}. "
        f"Put the tokenizer folder at {checkpoint / AUDIO_TOKENIZER_SUBDIR} or pass it explicitly"
    )


@dataclass(frozen=True)
class HiggsCheckpoint:
    """What tunesmith needs to know about a checkpoint folder before loading any weights."""

    directory: Path
    config: dict[str, Any]
    tokens: HiggsTokens
    audio_tokenizer_dir: Path
    tokenizer_config: HiggsTokenizerConfig
    has_text_head: bool

    @property
    def num_codebooks(self) -> int:
        return int(self.config.get("num_codebooks", 8))


def _weight_names(directory: Path) -> set[str]:
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return set(_read_json(index).get("weight_map", {}))
    single = directory / "model.safetensors"
    if not single.is_file():
        raise UserError(f"{directory}: no model.safetensors (or index) — the model weights are missing")
    try:
        with safe_open(str(single), framework="pt") as f:
            return set(f.keys())
    except Exception as exc:  # safetensors' own error type for damaged headers
        raise UserError(f"{single}: cannot read safetensors ({exc})") from exc


def read_higgs_checkpoint(directory: str | Path, audio_tokenizer: str | Path | None = None) -> HiggsCheckpoint:
    """Check a HiggsAudio v2 checkpoint folder and resolve its audio tokenizer; UserError naming what is wrong.

    Checks: ``model_type``; the text tokenizer files; stream BOS/EOS ids agreeing between model and
    processor configs; the audio tokenizer's codebook count equal to the model's ``num_codebooks`` and
    its codes below the stream ids, which in turn fit the model's ``codebook_size``.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserError(f"{directory}: no config.json — not a model folder")
    config = _read_json(config_path)
    found = config.get("model_type")
    if found != MODEL_TYPE:
        raise UserError(f"{directory}: model_type is {found!r}, expected {MODEL_TYPE!r} (a HiggsAudio v2 checkpoint)")
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise UserError(f"{directory}: no text tokenizer (tokenizer.json / tokenizer_config.json)")
    processor_path = directory / PROCESSOR_CONFIG
    processor = _read_json(processor_path) if processor_path.is_file() else {}
    bos, eos = int(config.get("audio_stream_bos_id", 1024)), int(config.get("audio_stream_eos_id", 1025))
    for key, model_value in (("audio_stream_bos_id", bos), ("audio_stream_eos_id", eos)):
        if key in processor and int(processor[key]) != model_value:
            raise UserError(
                f"{directory}: {key} is {model_value} in config.json but {processor[key]} in {PROCESSOR_CONFIG}"
            )
    tokens = HiggsTokens(
        num_codebooks=int(config.get("num_codebooks", 8)),
        stream_bos_id=bos,
        stream_eos_id=eos,
        **{k: str(processor[k]) for k in _TOKEN_KEYS if k in processor},
    )
    tok_dir = resolve_audio_tokenizer(directory, processor, audio_tokenizer)
    tok_config = HiggsTokenizerConfig.from_dict(
        _read_json(tok_dir / "config.json"), source=str(tok_dir / "config.json")
    )
    if tok_config.num_quantizers != tokens.num_codebooks:
        raise UserError(
            f"{directory}: codebook count mismatch — the model has num_codebooks={tokens.num_codebooks}, "
            f"the audio tokenizer {tok_dir} makes {tok_config.num_quantizers}"
        )
    size = int(config.get("codebook_size", 1024))
    if not tok_config.codebook_size <= min(bos, eos) or max(bos, eos) >= size:
        raise UserError(
            f"{directory}: audio ids do not fit — tokenizer codes < {tok_config.codebook_size}, "
            f"stream BOS/EOS {bos}/{eos}, "
            f"model codebook_size {size} (must hold codes and both stream ids)"
        )
    names = _weight_names(directory)
    return HiggsCheckpoint(
        directory=directory,
        config=config,
        tokens=tokens,
        audio_tokenizer_dir=tok_dir,
        tokenizer_config=tok_config,
        has_text_head="text_lm_head.weight" in names,
    )


def load_text_tokenizer(checkpoint: HiggsCheckpoint) -> Any:
    """The checkpoint's text tokenizer (transformers ``AutoTokenizer``, local files only; pad = eos if unset)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.directory), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # what transformers' conversion does for this model
    return tokenizer


def prompt_builder(
    checkpoint: HiggsCheckpoint, tokenizer: Any, label_reference_audio: bool = False
) -> HiggsPromptBuilder:
    """A :class:`HiggsPromptBuilder` with the checkpoint's tokens and its tokenizer's BOS."""
    tokens = checkpoint.tokens
    if tokenizer.bos_token:
        tokens = replace(tokens, bos_token=str(tokenizer.bos_token))
    return HiggsPromptBuilder(tokenizer, tokens, label_reference_audio=label_reference_audio)
