"""A transformers HiggsAudio v2 folder → a self-contained copy that carries its audio tokenizer inside.

``tunesmith import hf DIR --out MODEL [--audio-tokenizer TOKDIR]`` (and a tts run's ``init_from=hf:DIR``)
writes::

    MODEL/config.json, model.safetensors (or the index + its shards), generation_config.json
    MODEL/tokenizer.json, tokenizer_config.json, ...   the text tokenizer files the source has
    MODEL/chat_template.jinja | chat_template.json     when the source has them
    MODEL/processor_config.json     the source's, ``audio_tokenizer_name_or_path`` rewritten to "audio_tokenizer"
                                    (written from the checkpoint's tokens when the source has none)
    MODEL/audio_tokenizer/          the audio tokenizer folder (config.json + weights) + its own manifest.json
    MODEL/manifest.json             sha256 and size of every file above, audio_tokenizer/ included, and
                                    {"model_type": "higgs_audio_v2", "source_format": "hf-higgs_audio_v2",
                                     "imported_from": ..., "source_fingerprint": ...}

Files are hard-linked where the file system allows it (no extra disk), else copied; the folder appears
atomically (:func:`tunesmith.fileio.swap_folder`). The folder stays a plain transformers folder:
``HiggsAudioV2ForConditionalGeneration.from_pretrained(MODEL)`` and ``AutoTokenizer.from_pretrained(MODEL)``
load it. Importing the same source again into the same place returns the existing import when it is
whole (idempotent); any other non-empty ``out`` is refused unless tunesmith wrote it and ``force`` is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from tunesmith.artifacts.modeldir import guard_output
from tunesmith.errors import UserError
from tunesmith.fileio import atomic_write_json, link_or_copy, sha256_file, swap_folder
from tunesmith.models.higgs.checkpoint import (
    AUDIO_TOKENIZER_SUBDIR,
    MODEL_TYPE,
    PROCESSOR_CONFIG,
    HiggsCheckpoint,
    read_higgs_checkpoint,
)
from tunesmith.models.higgs.verify import MANIFEST, verify_higgs_dir

__all__ = ["import_higgs", "verify_higgs_dir", "higgs_fingerprint", "is_higgs_import", "SOURCE_FORMAT"]

log = logging.getLogger(__name__)

SOURCE_FORMAT = f"hf-{MODEL_TYPE}"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
MODEL_FILES = ("config.json", "generation_config.json", WEIGHTS_INDEX)
TEXT_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "preprocessor_config.json")
AUDIO_TOKENIZER_CLASS = "HiggsAudioV2TokenizerModel"
_SKIPPED_IN_TOKENIZER = (MANIFEST, "pytorch_model.bin", "pytorch_model.bin.index.json")


def weight_paths(folder: Path) -> list[Path]:
    """The safetensors weights of a transformers folder: ``model.safetensors`` or the shards its index names."""
    from tunesmith.models.hf.hfdir import weight_files

    return weight_files(folder)


def source_files(source: Path) -> list[Path]:
    """The files of a transformers HiggsAudio folder that an import carries (model, text tokenizer, chat
    template, generation config); ``processor_config.json`` is written separately."""
    names = [*MODEL_FILES, *TEXT_TOKENIZER_FILES, *TEMPLATE_FILES]
    files = [source / name for name in names if (source / name).is_file()]
    files += [path for path in weight_paths(source) if path not in files]
    return files


def tokenizer_files(tok_dir: Path) -> list[Path]:
    """Every plain file of an audio tokenizer folder (not hidden, no manifest, no pickled weights)."""
    return sorted(
        path
        for path in tok_dir.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.name not in _SKIPPED_IN_TOKENIZER
    )


def higgs_fingerprint(source: str | Path, audio_tokenizer: str | Path | None = None) -> str:
    """sha256 over the name, size and modification time of every file an import of ``source`` carries
    (the audio tokenizer's included) and the processor config's bytes: cheap, and it changes when any
    of them is rewritten. The import records it; an import whose source fingerprint still matches is reused."""
    checkpoint = read_higgs_checkpoint(source, audio_tokenizer)
    return _fingerprint(checkpoint)


def _fingerprint(checkpoint: HiggsCheckpoint) -> str:
    digest = hashlib.sha256()
    source, tok_dir = checkpoint.directory, checkpoint.audio_tokenizer_dir
    for prefix, paths in (("", source_files(source)), (f"{AUDIO_TOKENIZER_SUBDIR}/", tokenizer_files(tok_dir))):
        for path in paths:
            stat = path.stat()
            digest.update(f"{prefix}{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    processor = source / PROCESSOR_CONFIG
    if processor.is_file():
        digest.update(processor.read_bytes())
    return digest.hexdigest()


def relative_processor_config(
    checkpoint: HiggsCheckpoint, tokenizer_path: str = AUDIO_TOKENIZER_SUBDIR
) -> dict[str, Any]:
    """The source's processor config with the audio tokenizer path set to ``tokenizer_path`` (default
    ``"audio_tokenizer"``, relative to the folder), or — for a source without one — the config transformers
    5.23's ``HiggsAudioV2Processor`` writes, from the checkpoint's tokens and stream ids."""
    path = checkpoint.directory / PROCESSOR_CONFIG
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
    else:
        from transformers import DacFeatureExtractor

        tokens = checkpoint.tokens
        config = {
            "audio_bos_token": tokens.audio_bos_token,
            "audio_delay_token": tokens.audio_delay_token,
            "audio_eos_token": tokens.audio_eos_token,
            "audio_stream_bos_id": tokens.stream_bos_id,
            "audio_stream_eos_id": tokens.stream_eos_id,
            "audio_token": tokens.audio_token,
            # hop_length 1: what transformers' conversion script gives the released processor
            "feature_extractor": DacFeatureExtractor(
                sampling_rate=checkpoint.tokenizer_config.sample_rate, hop_length=1
            ).to_dict(),
            "processor_class": "HiggsAudioV2Processor",
        }
        log.info("%s has no %s; writing one from its config and tokens", checkpoint.directory, PROCESSOR_CONFIG)
    nested = config.get("audio_tokenizer")
    if isinstance(nested, dict) or "audio_tokenizer_name_or_path" not in config:
        nested = dict(nested) if isinstance(nested, dict) else {}
        nested.setdefault("audio_tokenizer_class", AUDIO_TOKENIZER_CLASS)
        nested["audio_tokenizer_name_or_path"] = tokenizer_path
        config["audio_tokenizer"] = nested
    if "audio_tokenizer_name_or_path" in config:  # the flat layout of older processor configs
        config["audio_tokenizer_name_or_path"] = tokenizer_path
    return config


def write_tree_manifest(folder: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``folder/manifest.json``: sha256 and size of every file below ``folder`` (sub-folders included, by
    relative POSIX path; hidden files and the manifest itself left out), plus ``extra``."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or rel == MANIFEST or any(part.startswith(".") for part in Path(rel).parts):
            continue
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": 1, "files": files, **(extra or {})}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def write_audio_tokenizer(tok_dir: Path, out: Path) -> None:
    """The audio tokenizer folder's files into ``out`` (hard links where possible) + its own manifest, so that
    ``out`` also verifies on its own and counts as written by tunesmith inside the model folder."""
    out.mkdir(parents=True, exist_ok=True)
    for path in tokenizer_files(tok_dir):
        link_or_copy(path, out / path.name)
    write_tree_manifest(out, {"model_type": "higgs_audio_v2_tokenizer", "copied_from": str(tok_dir.resolve())})


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_higgs_import(folder: str | Path) -> bool:
    """Whether ``folder`` was written by :func:`import_higgs` (its manifest says so)."""
    return _read_manifest(Path(folder)).get("source_format") == SOURCE_FORMAT


def import_higgs(
    source: str | Path, out: str | Path, *, audio_tokenizer: str | Path | None = None, force: bool = False
) -> Path:
    """Import the transformers HiggsAudio v2 folder ``source`` into ``out`` (see the module docstring).

    ``source`` is checked first (:func:`read_higgs_checkpoint`: model type, text tokenizer, audio tokenizer
    found — ``audio_tokenizer`` names it explicitly — with the model's codebook count, stream ids; then every
    file as :func:`verify_higgs_dir` checks it). Returns ``out`` (resolved). When ``out`` already holds a
    whole import of the same source (same fingerprint), it is returned as it is.
    """
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if not source.is_dir():
        raise UserError(f"{source}: no such directory")
    checkpoint = read_higgs_checkpoint(source, audio_tokenizer)
    problems = verify_higgs_dir(source, audio_tokenizer=checkpoint.audio_tokenizer_dir)
    if problems:
        raise UserError(f"{source}: cannot import this HiggsAudio v2 folder:\n  - " + "\n  - ".join(problems))
    fingerprint = _fingerprint(checkpoint)
    existing = _read_manifest(out) if out.is_dir() else {}
    if existing.get("source_fingerprint") == fingerprint and not verify_higgs_dir(out):
        log.info("%s already holds the import of %s; kept as it is", out, source)
        return out.resolve()
    guard_output(out, force=force)
    out = out.resolve()
    with swap_folder(out) as tmp:
        for path in source_files(source):
            link_or_copy(path, tmp / path.name)
        (tmp / PROCESSOR_CONFIG).write_text(
            json.dumps(relative_processor_config(checkpoint), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        write_audio_tokenizer(checkpoint.audio_tokenizer_dir, tmp / AUDIO_TOKENIZER_SUBDIR)
        write_tree_manifest(
            tmp,
            {
                "model_type": MODEL_TYPE,
                "source_format": SOURCE_FORMAT,
                "imported_from": str(source.resolve()),
                "source_fingerprint": fingerprint,
                "audio_tokenizer_from": str(checkpoint.audio_tokenizer_dir.resolve()),
            },
        )
        problems = verify_higgs_dir(tmp)
        if problems:
            raise UserError(f"the import of {source} does not verify:\n  - " + "\n  - ".join(problems))
    log.info("imported HiggsAudio v2 %s into %s (audio tokenizer from %s)", source, out, checkpoint.audio_tokenizer_dir)
    return out
