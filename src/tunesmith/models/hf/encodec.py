"""A transformers EnCodec — a directory of its own, or a MusicGen's ``audio_encoder`` — as a tunesmith Codec.

``load_codec(DIR)`` returns an :class:`HFEncodecCodec` for directories whose ``config.json`` says
``model_type: "encodec"`` or ``"musicgen"`` (registered by importing :mod:`tunesmith.models.hf`). Its
bandwidth is validated against the model's ``target_bandwidths`` with an error that lists them (instead
of transformers' "This model doesn't support the bandwidth 6.0"), and waveforms are cast to the
weights' dtype and device (instead of "Input type (float) and bias type (c10::Half) should be the same").
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tunesmith.errors import UserError
from tunesmith.models.hf import convert
from tunesmith.models.hf.hfdir import CONFIG, PREPROCESSOR, load_prefixed, save_safetensors
from tunesmith.models.hf.verify import require_hf_dir

MODEL_TYPES = ("encodec", "musicgen", "musicgen_melody")


class HFEncodecCodec(nn.Module):
    """transformers ``EncodecModel`` behind the tunesmith :class:`~tunesmith.models.codec.protocol.Codec` protocol.

    ``sample_rate`` Hz, ``channels``, ``frame_rate`` frames/s (sample rate / hop), ``bins`` codes per
    codebook, ``n_q`` codebooks at the current ``bandwidth`` (kbps).
    """

    def __init__(self, model: nn.Module, bandwidth: float | None = None, source: str = "") -> None:
        super().__init__()
        config = model.config
        if config.chunk_length_s is not None or config.normalize:
            raise UserError(
                f"{source or 'this EnCodec'}: chunked or normalised EnCodec models (chunk_length_s / normalize, e.g. "
                "encodec_48khz) encode separately scaled chunks and cannot feed a language model"
            )
        self.model = model.eval()
        self.source = source
        self.sample_rate = int(config.sampling_rate)
        self.channels = int(config.audio_channels)
        self.hop_length = int(math.prod(config.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop_length
        self.bins = int(config.codebook_size)
        self.supported_bandwidths = [float(b) for b in config.target_bandwidths]
        self.bandwidth = max(self.supported_bandwidths)
        self.set_bandwidth(self.bandwidth if bandwidth is None else bandwidth)

    # ------------------------------------------------------------------ protocol

    @property
    def n_q(self) -> int:
        return convert.encodec_num_quantizers(self.model.config.to_dict(), self.bandwidth)

    def num_codebooks_at(self, kbps: float) -> int:
        return convert.encodec_num_quantizers(self.model.config.to_dict(), kbps)

    def set_bandwidth(self, kbps: float) -> None:
        """Select one of ``supported_bandwidths``; UserError listing them for any other value."""
        match = [b for b in self.supported_bandwidths if abs(b - float(kbps)) < 1e-6]
        if not match:
            raise UserError(
                f"{self.source or 'EnCodec'}: bandwidth {kbps} kbps is not supported by this model; "
                f"valid bandwidths: {self.supported_bandwidths} (set codec_bandwidth to one of them)"
            )
        self.bandwidth = match[0]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def encode(self, wav: Tensor) -> Tensor:
        """Waveform float ``[B, C, T]`` (any float dtype/device) → codes Long ``[B, n_q, ceil(T / hop)]``."""
        wav = torch.as_tensor(wav)
        if not wav.is_floating_point():
            raise UserError(
                f"EnCodec encode expects a float waveform in [-1, 1] of shape [batch, channels, samples], "
                f"got {wav.dtype}; convert integer PCM with wav / 32768"
            )
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise UserError(f"EnCodec encode expects [batch, {self.channels}, samples], got {list(wav.shape)}")
        wav = wav.to(device=self.device, dtype=self.dtype)
        codes = self.model.encode(wav, bandwidth=self.bandwidth, return_dict=True).audio_codes  # [1, B, K, F]
        return codes[0].long()

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes Long ``[B, K, F]`` (K ≤ n_q of the codec) → waveform float ``[B, C, F · hop]``."""
        codes = torch.as_tensor(codes)
        if codes.is_floating_point():
            raise UserError(
                "EnCodec decode expects integer codes [batch, codebooks, frames]; got a float tensor "
                "(a waveform?): encode audio first"
            )
        if codes.dim() != 3:
            raise UserError(f"EnCodec decode expects codes [batch, codebooks, frames], got {list(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.bins):
            raise UserError(
                f"EnCodec decode: codes must lie in [0, {self.bins}), got [{int(codes.min())}, "
                f"{int(codes.max())}] (pattern padding left in?)"
            )
        audio = self.model.decode(codes.to(self.device)[None], [None], return_dict=True).audio_values
        return audio.float()

    def config_dict(self) -> dict[str, Any]:
        """What makes this codec's tokens (for the token cache's fingerprint)."""
        return {"encodec": self.model.config.to_dict(), "bandwidth": self.bandwidth}

    # ------------------------------------------------------------------ files

    def save(self, out: str | Path) -> Path:
        """Write a transformers EnCodec directory (config.json, model.safetensors, preprocessor_config.json)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        config = self.model.config.to_dict()
        config.setdefault("architectures", ["EncodecModel"])
        (out / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_safetensors(out / "model.safetensors", self.model.state_dict())
        (out / PREPROCESSOR).write_text(json.dumps(feature_extractor_config(config), indent=2) + "\n")
        return out


def feature_extractor_config(audio: dict) -> dict[str, Any]:
    """The ``preprocessor_config.json`` of transformers' EncodecFeatureExtractor for an EnCodec config."""
    return {
        "feature_extractor_type": "EncodecFeatureExtractor",
        "feature_size": int(audio.get("audio_channels", 1)),
        "sampling_rate": int(audio["sampling_rate"]),
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": True,
        "chunk_length_s": audio.get("chunk_length_s"),
        "overlap": audio.get("overlap"),
    }


_LEGACY_WEIGHT_NORM = (
    (".weight_g", ".parametrizations.weight.original0"),
    (".weight_v", ".parametrizations.weight.original1"),
)


def _rename_legacy_weight_norm(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Old checkpoints store weight norm as ``weight_g``/``weight_v``; current modules as parametrizations."""
    out = {}
    for name, tensor in state.items():
        for old, new in _LEGACY_WEIGHT_NORM:
            if name.endswith(old) and name not in expected:
                candidate = name[: -len(old)] + new
                if candidate in expected:
                    name = candidate
                    break
        out[name] = tensor
    return out


def build_encodec(audio_config: dict, state: dict[str, Tensor], where: str) -> nn.Module:
    """A transformers EncodecModel from its config dict and weights (strict; legacy weight-norm names mapped)."""
    from transformers import EncodecConfig, EncodecModel

    config = EncodecConfig(**{k: v for k, v in audio_config.items() if k not in ("model_type", "transformers_version")})
    model = EncodecModel(config)
    expected = set(model.state_dict())
    state = _rename_legacy_weight_norm(state, expected)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UserError(
            f"{where}: EnCodec weights do not match its config (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    model.load_state_dict(state)
    return model.eval()


def default_bandwidth(config: dict) -> float | None:
    """A MusicGen's codec bandwidth: the one giving the decoder's codebooks; None for a plain EnCodec (all)."""
    if config.get("model_type") not in ("musicgen", "musicgen_melody"):
        return None
    decoder = config["decoder"]
    audio, k = config["audio_encoder"], decoder["num_codebooks"] // int(decoder.get("audio_channels") or 1)
    return next(float(b) for b in audio["target_bandwidths"] if convert.encodec_num_quantizers(audio, float(b)) == k)


def load_hf_codec(path: str | Path, bandwidth: float | None = None, device: str = "cpu") -> Any:
    """An EnCodec from a transformers ``encodec`` directory or a MusicGen directory's audio encoder.

    ``bandwidth`` kbps (None: a MusicGen's own, else all codebooks); the directory is verified first. A
    stereo MusicGen's (decoder ``audio_channels=2``) comes as an
    :class:`~tunesmith.models.codec.stereo.InterleavedStereoCodec` over its mono EnCodec.
    """
    from tunesmith.models.codec.stereo import as_channels

    path = Path(path)
    config = require_hf_dir(path)
    if config["model_type"] in ("musicgen", "musicgen_melody"):
        codec = _load_hf_codec(path, config, bandwidth, device)
        return as_channels(codec, int(config["decoder"].get("audio_channels") or 1))
    return _load_hf_codec(path, config, bandwidth, device)


def _load_hf_codec(path: Path, config: dict, bandwidth: float | None, device: str) -> HFEncodecCodec:
    if config["model_type"] in ("musicgen", "musicgen_melody"):
        audio = config["audio_encoder"]
        state = load_prefixed(path, convert.AUDIO)
    else:
        audio = config
        state = load_prefixed(path, "")
    model = build_encodec(audio, state, str(path))
    codec = HFEncodecCodec(model, default_bandwidth(config) if bandwidth is None else bandwidth, source=str(path))
    return codec.to(device)


def write_encodec_dir(source: str | Path, out: str | Path) -> Path:
    """The EnCodec of a transformers ``encodec`` or ``musicgen`` directory written as an ``encodec`` directory."""
    source, out = Path(source), Path(out)
    config = require_hf_dir(source)
    if config["model_type"] == "encodec":
        out.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file() and item.name != "manifest.json":
                shutil.copy2(item, out / item.name)
        return out
    return _load_hf_codec(source, config, None, "cpu").save(out)  # the mono EnCodec, also of a stereo MusicGen


def is_hf_codec_dir(path: Path) -> bool:
    from tunesmith.models.codec.loading import model_type

    return model_type(path) in MODEL_TYPES


_registered = False


def register() -> None:
    """Let ``load_codec`` open transformers EnCodec/MusicGen directories (idempotent)."""
    global _registered
    if _registered:
        return
    from tunesmith.models.codec.loading import register_codec_loader

    register_codec_loader(is_hf_codec_dir, load_hf_codec)
    _registered = True


register()
