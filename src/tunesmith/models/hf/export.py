"""``tunesmith export RUN --format hf --out DIR``: a tunesmith LM → a transformers MusicGen directory.

The result loads with ``transformers.MusicgenForConditionalGeneration.from_pretrained(DIR)`` and
``AutoProcessor.from_pretrained(DIR)``, with no tunesmith installed::

    config.json                 model_type "musicgen" with text_encoder / audio_encoder / decoder sub-configs
    model.safetensors           text_encoder.* (T5), audio_encoder.* (EnCodec), decoder.* (+ enc_to_dec_proj.*)
    generation_config.json      start/pad token = codebook size, sampling defaults from the run's generate section
    preprocessor_config.json    EncodecFeatureExtractor settings (and the processor class)
    tokenizer files             the T5 tokenizer's (tokenizer.json, spiece.model, ...)
    manifest.json               sha256 and size of every file (checked by `tunesmith verify DIR`)

LoRA runs are merged first. The LM must be MusicGen-shaped (delay pattern, sinusoidal positions,
LayerNorm, bias-free linears, T5 cross-attention) and its codec a transformers EnCodec. A stereo LM
(``model.channels=2``) is written with decoder ``audio_channels=2`` over its mono EnCodec and a
``feature_size=2`` feature extractor; a melody LM (``model.conditioner.chroma``) as a
``MusicgenMelodyForConditionalGeneration`` (``model_type: musicgen_melody``) with a MusicgenMelodyFeatureExtractor
preprocessor config (loading that processor in transformers needs torchaudio). The tokenizer_config.json is written
without the padding keys transformers' processor would pass on to the audio feature extractor.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from torch import Tensor

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.artifacts import modeldir
from tunesmith.errors import UserError
from tunesmith.fileio import swap_folder
from tunesmith.models.hf import convert
from tunesmith.models.hf.encodec import HFEncodecCodec, feature_extractor_config
from tunesmith.models.hf.hfdir import (
    CONFIG,
    GENERATION_CONFIG,
    PREPROCESSOR,
    TOKENIZER_FILES,
    load_selected,
    read_json_object,
    save_safetensors,
)
from tunesmith.models.hf.importer import resolve_t5_path
from tunesmith.models.lm.loading import read_lm_checkpoint
from tunesmith.models.lm.model import LMConfig

log = logging.getLogger(__name__)


def resolve_recorded_path(value: str, folder: Path) -> Path | None:
    """A path recorded in a run config: absolute, or relative to the working directory, the checkpoint or
    model folder, the run folder and its parents (runs are often started from a project root)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    run_dir = folder.parent.parent if folder.parent.name == "checkpoints" else folder
    for base in (Path.cwd(), folder, run_dir, *run_dir.parents):
        if (base / path).exists():
            return base / path
    return None


def find_codec(run_cfg: dict, folder: Path) -> Path:
    """The codec directory of an LM run or model directory (``codec/`` inside it first)."""
    if (folder / "codec").is_dir():
        return folder / "codec"
    recorded = str(run_cfg.get("codec") or "")
    found = resolve_recorded_path(recorded, folder) if recorded else None
    if found is None:
        raise UserError(f"{folder}: cannot find the codec this LM was trained with (config says codec={recorded!r})")
    return found


def load_export_codec(run_cfg: dict, folder: Path) -> HFEncodecCodec:
    from tunesmith.models.codec import load_codec

    path = find_codec(run_cfg, folder)
    codec = load_codec(path, bandwidth=run_cfg.get("codec_bandwidth") or None)
    codec = getattr(codec, "mono", codec)  # a stereo MusicGen stores its mono EnCodec
    if not isinstance(codec, HFEncodecCodec):
        raise UserError(
            f"{path}: a transformers MusicGen needs a transformers EnCodec as its audio encoder; this LM was trained "
            "on a tunesmith codec, which transformers cannot load (export with --format tunesmith instead)"
        )
    return codec


def _t5_dir(lm_cfg: LMConfig, folder: Path) -> Path:
    t5 = resolve_t5_path(lm_cfg.conditioner.t5_path, folder)
    if not t5 or not Path(t5).is_dir():
        raise UserError(f"{folder}: the T5 directory of this LM is gone (model.conditioner.t5_path={t5!r})")
    return Path(t5)


# tokenizer_config.json keys that transformers' ProcessorMixin passes on to the audio feature extractor too,
# which EncodecFeatureExtractor.__call__ does not take ("got an unexpected keyword argument 'pad_to_multiple_of'")
LEAKING_TOKENIZER_KEYS = ("pad_to_multiple_of", "return_attention_mask")


def copy_tokenizer_files(t5_dir: Path, out: Path) -> None:
    """The T5 tokenizer files into ``out``; tokenizer_config.json without :data:`LEAKING_TOKENIZER_KEYS`, so
    that the exported processor, reloaded with ``from_pretrained``, accepts audio prompts."""
    for name in TOKENIZER_FILES:
        if not (t5_dir / name).is_file():
            continue
        if name != "tokenizer_config.json":
            shutil.copy2(t5_dir / name, out / name)
            continue
        config = read_json_object(t5_dir / name)
        dropped = [key for key in LEAKING_TOKENIZER_KEYS if key in config]
        for key in dropped:
            config.pop(key)
        if dropped:
            log.info("tokenizer_config.json: dropped %s (they would reach the audio feature extractor)", dropped)
        (out / name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def processor_config(lm_cfg: LMConfig, codec: HFEncodecCodec) -> dict[str, Any]:
    """``preprocessor_config.json``: EnCodec's feature extractor (``feature_size`` = channels: a stereo one takes
    [2, T]), or for a melody model MusicgenMelodyFeatureExtractor with the LM's chroma analysis."""
    c = lm_cfg.conditioner
    if not c.chroma:
        return {
            **feature_extractor_config(codec.model.config.to_dict()),
            "feature_size": lm_cfg.channels,
            "processor_class": "MusicgenProcessor",
        }
    return {
        "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
        "feature_size": c.chroma_bins,
        "num_chroma": c.chroma_bins,
        "sampling_rate": c.chroma_sample_rate,
        "n_fft": c.chroma_n_fft,
        "hop_length": c.chroma_hop,
        "chunk_length": 30,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
        "stem_indices": [3, 2],
        "processor_class": "MusicgenMelodyProcessor",
    }


def generation_config(run_cfg: dict, lm_cfg: LMConfig, frame_rate: float) -> dict[str, Any]:
    g = run_cfg.get("generate") or {}
    frames = round(float(g.get("duration") or 10.0) * frame_rate)
    temperature = float(g.get("temperature", 1.0))
    config: dict[str, Any] = {
        "decoder_start_token_id": lm_cfg.card,
        "pad_token_id": lm_cfg.card,
        "bos_token_id": lm_cfg.card,
        "do_sample": temperature > 0,  # tunesmith's temperature 0 is greedy
        "guidance_scale": float(g.get("cfg", 3.0)),
        "max_length": frames + lm_cfg.num_codebooks,  # the start token + frames + the pattern's delay
    }
    if temperature > 0:
        config.update(temperature=temperature, top_k=int(g.get("top_k", 250)))
    return config


def musicgen_tensors(
    lm_cfg: LMConfig, state: dict[str, Tensor], t5_dir: Path, codec: HFEncodecCodec
) -> tuple[dict, dict[str, Tensor]]:
    """(config.json dict, state dict) of the MusicGen made of this LM, its T5 and its EnCodec."""
    from transformers import (
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        T5Config,
    )

    problems = convert.exportable_problems(lm_cfg)
    if problems:
        raise UserError("this LM cannot be written as a MusicGen:\n  - " + "\n  - ".join(problems))
    t5_raw = read_json_object(t5_dir / CONFIG)
    if t5_raw.get("model_type") != "t5":
        raise UserError(f"{t5_dir}/config.json: model_type {t5_raw.get('model_type')!r}, expected 't5'")
    t5_config = T5Config(**{k: v for k, v in t5_raw.items() if k not in ("model_type", "architectures")})
    if lm_cfg.channels == 2 and codec.channels != 1:
        raise UserError(f"a MusicGen's EnCodec is mono (stereo runs it per channel); this one has {codec.channels}")
    per_channel = lm_cfg.num_codebooks // lm_cfg.channels
    if codec.bins != lm_cfg.card or codec.n_q < per_channel:
        raise UserError(
            f"the codec ({codec.n_q} codebooks × {codec.bins}) does not match the LM "
            f"({per_channel} codebooks per channel × {lm_cfg.card})"
        )
    text_hidden = t5_config.d_model
    subs = {"text_encoder": t5_config.to_dict(), "audio_encoder": codec.model.config.to_dict()}
    decoder_kwargs = convert.hf_decoder_config(lm_cfg, text_hidden=text_hidden)
    if lm_cfg.conditioner.chroma:
        decoder = MusicgenMelodyDecoderConfig(**decoder_kwargs)
        config = MusicgenMelodyConfig(
            **subs,
            decoder=decoder.to_dict(),
            num_chroma=lm_cfg.conditioner.chroma_bins,
            chroma_length=lm_cfg.conditioner.chroma_length,
        ).to_dict()
        config["architectures"] = ["MusicgenMelodyForConditionalGeneration"]
    else:
        decoder = MusicgenDecoderConfig(**decoder_kwargs)
        config = MusicgenConfig(**subs, decoder=decoder.to_dict()).to_dict()
        config["architectures"] = ["MusicgenForConditionalGeneration"]
    tensors = {convert.TEXT + k: v for k, v in load_selected(t5_dir, ("shared.", "encoder.")).items()}
    if not tensors:
        raise UserError(f"{t5_dir}: holds no T5 encoder weights (shared.*, encoder.*)")
    tensors.update({convert.AUDIO + k: v for k, v in codec.model.state_dict().items()})
    tensors.update(convert.hf_state_from_lm(state, lm_cfg, text_hidden=text_hidden))
    return config, tensors


def export_hf(source: str | Path, out: str | Path, *, which: str = "best", force: bool = False) -> Path:
    """Write a transformers MusicGen directory ``out`` from an LM run, checkpoint or model directory
    (an existing ``out`` only when tunesmith wrote it and ``force`` is given: ``guard_output``)."""
    from tunesmith.models.hf.verify import verify_hf_dir

    modeldir.guard_output(Path(out).expanduser(), force=force)

    lm = read_lm_checkpoint(source, which)
    folder, run_cfg, lm_cfg, state = lm.folder, lm.run_config, lm.config, lm.weights
    if lm_cfg.conditioner.text != "t5":
        raise UserError(f"{source}: model.conditioner.text={lm_cfg.conditioner.text!r}; a MusicGen conditions on T5")
    t5_dir = _t5_dir(lm_cfg, folder)
    codec = load_export_codec(run_cfg, folder)
    config, tensors = musicgen_tensors(lm_cfg, state, t5_dir, codec)
    out = Path(out).expanduser()
    with swap_folder(out) as tmp:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_safetensors(tmp / "model.safetensors", tensors)
        gen = generation_config(run_cfg, lm_cfg, codec.frame_rate)
        (tmp / GENERATION_CONFIG).write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
        processor = processor_config(lm_cfg, codec)
        (tmp / PREPROCESSOR).write_text(json.dumps(processor, indent=2) + "\n")
        copy_tokenizer_files(t5_dir, tmp)
        ckpt.write_manifest(tmp, {"model_type": config["model_type"], "exported_from": str(folder)})
        problems = verify_hf_dir(tmp)
        if problems:
            raise UserError("the exported directory does not verify:\n  - " + "\n  - ".join(problems))
    log.info("exported %s as a transformers MusicGen to %s", folder, out)
    return out
