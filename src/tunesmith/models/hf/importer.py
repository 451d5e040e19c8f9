"""A transformers MusicGen directory → a tunesmith LM model directory.

``tunesmith import hf DIR --out MODEL_DIR`` writes::

    MODEL_DIR/config.json        {"model_type": "tunesmith-lm", "format_version": 1, "meta": {...},
                                  "config": {"model": <LMConfig>, "codec": "codec", "codec_bandwidth": kbps}}
    MODEL_DIR/model.safetensors  the decoder as tunesmith LM weights (see :mod:`tunesmith.models.hf.convert`)
    MODEL_DIR/t5/                the T5 encoder (transformers T5EncoderModel directory) and its tokenizer
    MODEL_DIR/codec/             the EnCodec (transformers EncodecModel directory)
    manifest.json                in MODEL_DIR, t5/ and codec/: sha256 and size of every file

so that ``tunesmith generate MODEL_DIR`` and ``tunesmith train lm ... init_from=MODEL_DIR`` use it like any
tunesmith LM. The conditioner's ``t5_path`` is written absolute; :func:`resolve_t5_path` falls back to
``MODEL_DIR/t5`` when the directory was moved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.artifacts.modeldir import FORMAT_VERSION, TUNESMITH_PREFIX, guard_output
from tunesmith.errors import UserError
from tunesmith.fileio import swap_folder
from tunesmith.models.hf import convert
from tunesmith.models.hf.encodec import default_bandwidth, write_encodec_dir
from tunesmith.models.hf.hfdir import (
    CONFIG,
    PREPROCESSOR,
    TOKENIZER_FILES,
    load_prefixed,
    load_selected,
    save_safetensors,
)
from tunesmith.models.hf.verify import require_hf_dir

log = logging.getLogger(__name__)

LM_MODEL_TYPE = f"{TUNESMITH_PREFIX}lm"
SOURCE_FORMAT = "hf-musicgen"
T5_DIR = "t5"
CODEC_DIR = "codec"


def config_fingerprint(folder: Path) -> str:
    """sha256 of a transformers directory's config.json and its weight files' names and sizes (cheap)."""
    from tunesmith.models.hf.hfdir import weight_files

    digest = hashlib.sha256((folder / CONFIG).read_bytes())
    for path in weight_files(folder):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def write_t5_dir(source: Path, config: dict, out: Path) -> Path:
    """The MusicGen's text encoder as a transformers T5EncoderModel directory (+ tokenizer files)."""
    out.mkdir(parents=True, exist_ok=True)
    text = dict(config["text_encoder"])
    text["architectures"] = ["T5EncoderModel"]
    (out / CONFIG).write_text(json.dumps(text, indent=2, sort_keys=True) + "\n")
    state = load_prefixed(source, convert.TEXT)
    if not state:
        raise UserError(f"{source}: the weights hold no text encoder ({convert.TEXT}*)")
    save_safetensors(out / "model.safetensors", state)
    copied = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copy2(source / name, out / name)
    if not any(name in copied for name in ("tokenizer.json", "spiece.model")):
        raise UserError(f"{source}: no T5 tokenizer files (tokenizer.json or spiece.model) to import")
    ckpt.write_manifest(out)
    return out


def chroma_analysis(source: Path) -> dict:
    """A MusicGen-melody directory's chroma settings (sampling_rate, n_fft, hop_length) from its
    ``preprocessor_config.json``; {} when it has none (MusicGen-melody's defaults apply). The file is read as
    JSON only: transformers' MusicgenMelodyFeatureExtractor needs torchaudio, tunesmith's chroma does not."""
    path = source / PREPROCESSOR
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("feature_extractor_type") != "MusicgenMelodyFeatureExtractor":
        return {}
    return {k: data[k] for k in ("sampling_rate", "n_fft", "hop_length") if isinstance(data.get(k), int)}


def import_hf(source: str | Path, out: str | Path, *, text_max_len: int | None = None, force: bool = False) -> Path:
    """Convert a local transformers MusicGen directory into a tunesmith model directory ``out``.

    The source is verified first (config, weights, tokenizer); ``out`` appears atomically. An existing
    ``out`` is replaced only when tunesmith wrote it and ``force`` is given (``guard_output``).
    """
    source, out = Path(source).expanduser(), Path(out).expanduser()
    guard_output(out, force=force)
    config = require_hf_dir(source, "musicgen")
    out = out.resolve()
    with swap_folder(out) as tmp:
        write_t5_dir(source, config, tmp / T5_DIR)
        write_encodec_dir(source, tmp / CODEC_DIR)
        ckpt.write_manifest(tmp / CODEC_DIR)
        lm_cfg = convert.lm_config_from_hf(config, t5_path=str(out / T5_DIR), chroma_analysis=chroma_analysis(source))
        if text_max_len:
            lm_cfg.conditioner.text_max_len = text_max_len
        tensors = load_selected(source, (convert.DECODER, convert.HEADS, convert.PROJ, convert.CHROMA_PROJ))
        state = convert.lm_state_from_hf(tensors, config)
        ckpt.save_tensors(tmp / ckpt.WEIGHTS, state)
        write_lm_config(
            tmp,
            lm_cfg,
            codec=CODEC_DIR,
            codec_bandwidth=default_bandwidth(config),
            meta={
                "task": "lm",
                "source_format": SOURCE_FORMAT,
                "imported_from": str(source.resolve()),
                "source_fingerprint": config_fingerprint(source),
            },
        )
        ckpt.write_manifest(tmp, {"model_type": LM_MODEL_TYPE})
    log.info("imported %s into %s", source, out)
    return out


def write_lm_config(folder: Path, lm_cfg, *, codec: str, codec_bandwidth: float | None, meta: dict) -> None:
    """config.json of a tunesmith LM model directory (what Generator.from_path and init_from read)."""
    from tunesmith.config import to_dict

    config = {
        "model_type": LM_MODEL_TYPE,
        "format_version": FORMAT_VERSION,
        "meta": meta,
        "config": {"model": to_dict(lm_cfg), "codec": codec, "codec_bandwidth": codec_bandwidth or 0.0},
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def resolve_t5_path(t5_path: str, folder: Path | None) -> str:
    """``t5_path`` as recorded, or ``folder/t5`` when the recorded one is gone (a moved model directory)."""
    if t5_path and Path(t5_path).expanduser().is_dir():
        return str(Path(t5_path).expanduser())
    if folder is not None and (Path(folder) / T5_DIR).is_dir():
        return str(Path(folder) / T5_DIR)
    if t5_path and folder is not None and not Path(t5_path).is_absolute() and (Path(folder) / t5_path).is_dir():
        return str(Path(folder) / t5_path)
    return t5_path


def is_imported_dir(folder: Path) -> bool:
    """Whether ``folder`` is a tunesmith model directory made by :func:`import_hf` (or a merge of one)."""
    try:
        config = json.loads((Path(folder) / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (config.get("meta") or {}).get("source_format") == SOURCE_FORMAT


IMPORTABLE = {
    "musicgen": "MusicGen",
    "musicgen_melody": "MusicGen-melody",
    "higgs_audio_v2": "HiggsAudio v2",
}


def import_folder(
    source: str | Path,
    out: str | Path,
    *,
    text_max_len: int | None = None,
    audio_tokenizer: str | Path | None = None,
    force: bool = False,
) -> tuple[str, Path]:
    """``tunesmith import hf``: (family name, output folder) of importing the transformers folder ``source``.

    A MusicGen(-melody) folder goes to :func:`import_hf`, a HiggsAudio v2 folder (``model_type:
    "higgs_audio_v2"``) to :func:`tunesmith.models.higgs.importer.import_higgs` (``audio_tokenizer``: its audio
    tokenizer as a second folder); any other folder is refused naming the model type found and the supported ones.
    """
    from tunesmith.models.hf.hfdir import read_json_object

    source = Path(source).expanduser()
    if not source.is_dir():
        raise UserError(f"{source}: no such directory")
    if not (source / CONFIG).is_file():
        raise UserError(f"{source}: no config.json — not a transformers model folder")
    model_type = read_json_object(source / CONFIG).get("model_type")
    supported = ", ".join(f"{name} ({family})" for name, family in IMPORTABLE.items())
    if model_type not in IMPORTABLE:
        hint = ""
        if model_type == "higgs_audio_v2_tokenizer":
            hint = (
                "; this is a HiggsAudio v2 audio tokenizer: import the model folder and pass this one with "
                "--audio-tokenizer"
            )
        raise UserError(
            f"{source / CONFIG}: model_type {model_type!r} cannot be imported; supported model types: {supported}{hint}"
        )
    if model_type == "higgs_audio_v2":
        from tunesmith.models.higgs.importer import import_higgs

        if text_max_len is not None:
            raise UserError("--text-max-len applies to MusicGen folders only (a HiggsAudio v2 folder has none)")
        return IMPORTABLE[model_type], import_higgs(source, out, audio_tokenizer=audio_tokenizer, force=force)
    if audio_tokenizer is not None:
        raise UserError("--audio-tokenizer applies to HiggsAudio v2 folders only (a MusicGen carries its EnCodec)")
    return IMPORTABLE[model_type], import_hf(source, out, text_max_len=text_max_len, force=force)
