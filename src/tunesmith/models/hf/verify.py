"""Check a transformers MusicGen or EnCodec directory and name every problem precisely.

``tunesmith verify DIR`` and every HF load go through :func:`verify_hf_dir`, so a user reads
"config.json has no model_type", "decoder sub-config missing" or "model.safetensors checksum
mismatch" instead of transformers' generic "Unrecognized model". A directory tunesmith exported
carries a ``manifest.json`` (sha256 and size of every file), which is checked when present; without
one, each safetensors file's header is checked against its size (truncation) instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.models.hf import convert
from tunesmith.models.hf.hfdir import (
    CONFIG,
    MANIFEST,
    tensor_names,
    weight_file_problems,
    weight_files,
)

SUPPORTED = ("musicgen", "musicgen_melody", "encodec")
HIGGS_TYPES = ("higgs_audio_v2", "higgs_audio_v2_tokenizer")  # checked by tunesmith.models.higgs.verify
MUSICGENS = ("musicgen", "musicgen_melody")
SUB_CONFIGS = ("text_encoder", "audio_encoder", "decoder")
SUB_MODEL_TYPES = {"text_encoder": "t5", "audio_encoder": "encodec", "decoder": "musicgen_decoder"}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_encodec_config(audio: dict, where: str, num_codebooks: int | None = None) -> list[str]:
    """Problems of an EnCodec config section (``where`` names it in messages)."""
    problems = []
    for key in ("sampling_rate", "codebook_size", "audio_channels"):
        if not _positive_int(audio.get(key)):
            problems.append(f"{where}.{key}={audio.get(key)!r}: expected a positive integer")
    bandwidths = audio.get("target_bandwidths")
    if not isinstance(bandwidths, list) or not bandwidths or not all(isinstance(b, (int, float)) for b in bandwidths):
        problems.append(f"{where}.target_bandwidths={bandwidths!r}: expected a non-empty list of kbps")
    if audio.get("chunk_length_s") is not None:
        problems.append(
            f"{where}.chunk_length_s={audio['chunk_length_s']}: a chunked EnCodec (e.g. encodec_48khz) encodes "
            "audio as separately scaled chunks, which a language model cannot model as one token sequence"
        )
    if problems or num_codebooks is None:
        return problems
    counts = {float(b): convert.encodec_num_quantizers(audio, float(b)) for b in bandwidths}
    if num_codebooks not in counts.values():
        problems.append(
            f"{where}: no target bandwidth gives the decoder's {num_codebooks} codebooks "
            f"(codebooks per bandwidth: {counts})"
        )
    return problems


def check_musicgen_config(config: dict, where: str = CONFIG) -> list[str]:
    """Problems of a MusicGen or MusicGen-melody ``config.json`` (sub-configs and the fields tunesmith maps)."""
    problems = []
    melody = config.get("model_type") == "musicgen_melody"
    sub_types = {**SUB_MODEL_TYPES, "decoder": "musicgen_melody_decoder"} if melody else SUB_MODEL_TYPES
    if melody:
        for key in ("num_chroma", "chroma_length"):
            if not _positive_int(config.get(key)):
                problems.append(f"{where}: {key}={config.get(key)!r}: expected a positive integer (MusicGen-melody)")
    for name in SUB_CONFIGS:
        section = config.get(name)
        if section is None:
            problems.append(
                f"{where}: {name} sub-config missing (a MusicGen config.json has text_encoder, "
                "audio_encoder and decoder sections)"
            )
        elif not isinstance(section, dict):
            problems.append(f"{where}: {name} sub-config is not a JSON object")
        elif section.get("model_type") != sub_types[name]:
            problems.append(f"{where}: {name}.model_type={section.get('model_type')!r}, expected {sub_types[name]!r}")
    if problems:
        return problems
    decoder, text, audio = config["decoder"], config["text_encoder"], config["audio_encoder"]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim", "vocab_size", "num_codebooks"):
        if not _positive_int(decoder.get(key)):
            problems.append(f"{where}: decoder.{key}={decoder.get(key)!r}: expected a positive integer")
    if not _positive_int(text.get("d_model")):
        problems.append(f"{where}: text_encoder.d_model={text.get('d_model')!r}: expected a positive integer")
    if problems:
        return problems
    if decoder["hidden_size"] % decoder["num_attention_heads"]:
        problems.append(
            f"{where}: decoder.hidden_size={decoder['hidden_size']} is not divisible by "
            f"num_attention_heads={decoder['num_attention_heads']}"
        )
    channels = decoder.get("audio_channels", 1)
    if channels not in (1, 2):
        problems.append(f"{where}: decoder.audio_channels={channels!r}: a MusicGen is mono (1) or stereo (2)")
        return problems
    if channels == 2 and decoder["num_codebooks"] % 2:
        problems.append(
            f"{where}: decoder.num_codebooks={decoder['num_codebooks']}: a stereo MusicGen interleaves left and "
            "right codebooks, so it needs an even number"
        )
        return problems
    if channels == 2 and audio.get("audio_channels", 1) != 1:
        problems.append(
            f"{where}: audio_encoder.audio_channels={audio.get('audio_channels')}: a stereo MusicGen runs a mono "
            "EnCodec on each channel"
        )
    activation = decoder.get("activation_function", "gelu")
    if activation not in convert.ACTIVATIONS:
        supported = sorted(convert.ACTIVATIONS)
        problems.append(f"{where}: decoder.activation_function={activation!r}: supported are {supported}")
    for key in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
        value = decoder.get(key)
        if value is not None and value != decoder["vocab_size"]:
            problems.append(
                f"{where}: decoder.{key}={value} must equal decoder.vocab_size={decoder['vocab_size']} "
                "(the pattern padding / start token of MusicGen)"
            )
    cross = decoder.get("cross_attention_hidden_size")
    if cross is not None and not (cross == text["d_model"] == decoder["hidden_size"]):
        problems.append(
            f"{where}: decoder.cross_attention_hidden_size={cross} needs text_encoder.d_model and "
            "decoder.hidden_size equal to it"
        )
    if audio.get("codebook_size") != decoder["vocab_size"]:
        problems.append(
            f"{where}: audio_encoder.codebook_size={audio.get('codebook_size')} differs from "
            f"decoder.vocab_size={decoder['vocab_size']}"
        )
    per_channel = decoder["num_codebooks"] // channels
    problems.extend(check_encodec_config(audio, f"{where}: audio_encoder", per_channel))
    return problems


def check_manifest(folder: Path) -> list[str]:
    """Files listed in ``manifest.json`` that are missing, truncated, whose sha256 differs, or that would
    lead outside ``folder`` (:func:`tunesmith.artifacts.checkpoint.manifest_problems`)."""
    from tunesmith.artifacts.checkpoint import manifest_problems

    return manifest_problems(folder)


def check_weights(folder: Path, config: dict, model_type: str) -> list[str]:
    """Weights present, complete, and holding every tensor the config needs (from headers only)."""
    try:
        files = weight_files(folder)
    except UserError as err:
        return [str(err)]
    problems = weight_file_problems(folder, files)
    if problems:
        return problems
    names = tensor_names(folder)
    if model_type not in MUSICGENS:
        return [] if names else [f"{folder}: the weights hold no tensors"]
    for name, shape in convert.decoder_tensor_shapes(config).items():
        if name not in names:
            problems.append(f"{folder}: weights lack {name}")
        elif names[name][0] != shape:
            problems.append(f"{folder}: {name} has shape {names[name][0]}, config.json needs {shape}")
        if len(problems) >= 5:
            problems.append(f"{folder}: (further tensor problems not listed)")
            return problems
    if not any(n.startswith(convert.TEXT) for n in names):
        problems.append(f"{folder}: weights lack the text encoder ({convert.TEXT}*)")
    if not any(n.startswith(convert.AUDIO) for n in names):
        problems.append(f"{folder}: weights lack the audio encoder ({convert.AUDIO}*)")
    return problems


def check_tokenizer(folder: Path) -> list[str]:
    if (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file():
        return []
    return [
        f"{folder}: no T5 tokenizer files (tokenizer.json or spiece.model); copy them from the original "
        "download (they come with the processor)"
    ]


def verify_hf_dir(path: str | Path) -> list[str]:
    """Every problem with a transformers MusicGen or EnCodec directory; empty when tunesmith can load it."""
    folder = Path(path)
    if not folder.is_dir():
        return [f"{folder}: not a directory"]
    config_path = folder / CONFIG
    if not config_path.is_file():
        return [f"{folder}: config.json is missing"]
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [f"{config_path}: not valid JSON ({err}); the file is corrupted or truncated"]
    if not isinstance(config, dict):
        return [f"{config_path}: must hold a JSON object"]
    model_type = config.get("model_type")
    if model_type in HIGGS_TYPES:  # HiggsAudio v2 model or audio tokenizer folders: their own checks
        from tunesmith.models.higgs.verify import verify_higgs_dir, verify_higgs_tokenizer_dir

        return verify_higgs_dir(folder) if model_type == HIGGS_TYPES[0] else verify_higgs_tokenizer_dir(folder)
    checksums = check_manifest(folder) if (folder / MANIFEST).is_file() else []
    if not model_type or not isinstance(model_type, str):
        what = "has no model_type" if not model_type else f"has model_type={model_type!r}, not a string"
        return [
            f"{config_path}: config.json {what} (expected 'musicgen' or 'encodec'; was the file "
            "rewritten by hand or by an old exporter?)",
            *checksums,
        ]
    if model_type not in SUPPORTED:
        return [
            f"{config_path}: model_type {model_type!r} is not a MusicGen or EnCodec model (supported model types: "
            f"{', '.join((*SUPPORTED, *HIGGS_TYPES))})",
            *checksums,
        ]
    problems = list(checksums)
    if model_type in MUSICGENS:
        config_problems = check_musicgen_config(config, str(config_path))
    else:
        config_problems = check_encodec_config(config, str(config_path))
    problems.extend(config_problems)
    if not config_problems and not any("safetensors" in p for p in problems):
        problems.extend(check_weights(folder, config, model_type))
    if model_type in MUSICGENS:
        problems.extend(check_tokenizer(folder))
    return problems


def require_hf_dir(path: str | Path, model_type: str | None = None) -> dict:
    """The config of a sound MusicGen/EnCodec directory; UserError listing every problem otherwise."""
    problems = verify_hf_dir(path)
    if problems:
        raise UserError(f"{path}: cannot load this Hugging Face directory:\n  - " + "\n  - ".join(problems))
    config = json.loads((Path(path) / CONFIG).read_text(encoding="utf-8"))
    if model_type == "musicgen" and config["model_type"] in MUSICGENS:  # the family
        return config
    if model_type is not None and config["model_type"] != model_type:
        raise UserError(f"{path}: is a {config['model_type']!r} directory, expected {model_type!r}")
    return config
