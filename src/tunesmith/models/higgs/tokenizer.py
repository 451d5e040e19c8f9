"""The HiggsAudio v2 audio tokenizer in tunesmith's own modules: 24 kHz waveform ↔ ``n_q`` × ``codebook_size`` codes.

Encode (as transformers 5.23's ``HiggsAudioV2TokenizerModel.encode``):

1. semantic path — resample 24 → 16 kHz (windowed sinc, :mod:`tunesmith.audio.sinc_resample`), pad
   ``downsample_factor / 2`` samples each side, run HuBERT, average all its hidden states
   (``num_hidden_layers + 1``), keep every ``semantic_stride``-th frame, run the semantic conv encoder;
2. acoustic path — the DAC encoder on the 24 kHz waveform, padded by ``hop / 2`` each side when its
   unpadded frame count would differ from the semantic path's;
3. concatenate on channels, ``fc`` (Linear D → D), residual VQ → codes ``[B, n_q, F]``.

Decode: sum the stages' code embeddings, ``fc2`` (D → acoustic width), DAC decoder → ``[B, 1, F · hop]``.

:func:`load_higgs_tokenizer` reads a transformers tokenizer directory (``config.json`` +
``model.safetensors`` or a sharded index) by name, folding weight-norm pairs into plain weights and
dropping what inference never reads (``decoder_semantic``, ``fc1``, the codebooks' EMA statistics).
The class satisfies :class:`tunesmith.models.codec.protocol.Codec`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunesmith.audio.sinc_resample import sinc_resample
from tunesmith.errors import UserError
from tunesmith.models.higgs.dac import AcousticDecoder, AcousticEncoder
from tunesmith.models.higgs.hubert import Hubert
from tunesmith.models.higgs.quantizer import ResidualQuantizer
from tunesmith.models.higgs.semantic import SemanticEncoder
from tunesmith.models.higgs.tokenizer_config import HiggsTokenizerConfig

log = logging.getLogger(__name__)

# Checkpoint tensors inference never reads (the semantic decoder and fc1 train the tokenizer; the
# codebook statistics drive its EMA updates; masked_spec_embed is HuBERT's training mask).
_UNUSED_PREFIXES = ("decoder_semantic.", "fc1.")
_UNUSED_SUFFIXES = (".codebook.inited", ".codebook.cluster_size", ".codebook.embed_avg", "masked_spec_embed")


class HiggsAudioTokenizer(nn.Module):
    """The tokenizer. ``sample_rate`` Hz mono in and out, ``frame_rate`` code frames/s, ``bins`` codes per codebook."""

    channels = 1

    def __init__(self, config: HiggsTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.acoustic_encoder = AcousticEncoder(config.acoustic)
        self.acoustic_decoder = AcousticDecoder(config.acoustic)
        self.encoder_semantic = SemanticEncoder(config)
        self.semantic_model = Hubert(config.semantic)
        self.fc = nn.Linear(config.hidden_size, config.hidden_size)
        self.fc2 = nn.Linear(config.hidden_size, config.acoustic.hidden_size)
        self.quantizer = ResidualQuantizer(
            config.num_quantizers, config.hidden_size, config.codebook_size, config.codebook_dim
        )
        self.sample_rate = int(config.sample_rate)
        self.frame_rate = float(config.frame_rate)
        self.bins = int(config.codebook_size)
        self.supported_bandwidths = [float(b) for b in config.target_bandwidths]
        self.bandwidth = self.supported_bandwidths[-1]
        self.source = ""
        self.weights_sha256 = ""

    # ------------------------------------------------------------------ Codec protocol

    @property
    def n_q(self) -> int:
        """Codebooks per frame at the current bandwidth."""
        return self.config.quantizers_for_bandwidth(self.bandwidth)

    def set_bandwidth(self, kbps: float) -> None:
        """Select one of ``supported_bandwidths`` (kbps); UserError listing them for any other value."""
        match = [b for b in self.supported_bandwidths if abs(b - float(kbps)) < 1e-9]
        if not match:
            raise UserError(
                f"{self.source or 'HiggsAudio tokenizer'}: bandwidth {kbps} kbps is not supported; "
                f"valid bandwidths: {self.supported_bandwidths}"
            )
        self.bandwidth = match[0]

    # ------------------------------------------------------------------ encode

    def _hubert_frames(self, samples: int) -> int:
        """HuBERT frames for ``samples`` at ``sample_rate`` (0 when a conv layer would get less than its kernel)."""
        cfg = self.config
        length = math.ceil(samples * cfg.semantic_sample_rate / cfg.sample_rate) + 2 * (cfg.downsample_factor // 2)
        for kernel, stride in zip(cfg.semantic.conv_kernel, cfg.semantic.conv_stride, strict=True):
            if length < kernel:
                return 0
            length = (length - kernel) // stride + 1
        return length

    @property
    def min_samples(self) -> int:
        """Shortest waveform (samples at ``sample_rate``) the semantic path can encode."""
        samples = 1
        while self._hubert_frames(samples) < 1:
            samples += 1
        return samples

    def semantic_features(self, wav: Tensor) -> Tensor:
        """``wav [B, 1, T]`` at ``sample_rate`` → mean HuBERT hidden state ``[B, F, H]`` at ``frame_rate``."""
        cfg = self.config
        x = wav
        if cfg.sample_rate != cfg.semantic_sample_rate:
            x = sinc_resample(x, cfg.sample_rate, cfg.semantic_sample_rate)
        half = cfg.downsample_factor // 2
        states = self.semantic_model(F.pad(x[:, 0, :], (half, half)))
        mean = torch.stack(states, dim=1).mean(dim=1)
        stride = cfg.semantic_stride
        return mean[:, ::stride, :] if stride > 1 else mean

    def embeddings(self, wav: Tensor) -> Tensor:
        """``wav [B, 1, T]`` → fused embedding ``[B, D, F]`` (``D = hidden_size``), the RVQ input."""
        semantic = self.encoder_semantic(self.semantic_features(wav).transpose(1, 2))
        frames = semantic.shape[2]
        if self.acoustic_encoder.output_length(wav.shape[2]) != frames:
            pad = self.config.hop_length // 2
            wav = F.pad(wav, (pad, pad))
        acoustic = self.acoustic_encoder(wav)
        if acoustic.shape[2] != frames:
            raise UserError(
                f"HiggsAudio tokenizer: acoustic path gives {acoustic.shape[2]} frames and semantic path {frames} "
                f"for {wav.shape[2]} samples; this tokenizer's strides do not line up"
            )
        fused = torch.cat([acoustic, semantic], dim=1)
        return self.fc(fused.transpose(1, 2)).transpose(1, 2)

    @torch.no_grad()
    def encode(self, wav: Tensor) -> Tensor:
        """Waveform ``[B, 1, T]`` float in [-1, 1] at ``sample_rate`` → codes ``[B, n_q, F]`` long.

        ``F`` = T / hop rounded to the nearest frame, halves down (960 → 1, 2000 → 2, 2400 → 3 at hop 960); exactly
        ``self.acoustic_encoder.output_length(T)``, which the semantic path is checked against.
        """
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise UserError(f"HiggsAudio tokenizer encodes mono [batch, 1, samples]; got shape {tuple(wav.shape)}")
        if wav.shape[2] < self.min_samples:
            raise UserError(
                f"HiggsAudio tokenizer: a clip of {wav.shape[2]} samples is too short to encode "
                f"(at least {self.min_samples} samples = {1000 * self.min_samples / self.sample_rate:.1f} ms)"
            )
        wav = wav.to(dtype=self.fc.weight.dtype, device=self.fc.weight.device)
        return self.quantizer.encode(self.embeddings(wav), self.n_q)

    # ------------------------------------------------------------------ decode

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, K, F]`` (K ≤ codebooks, values < ``bins``) → waveform ``[B, 1, F · hop]`` float."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= len(self.quantizer.quantizers):
            raise UserError(
                f"HiggsAudio tokenizer decodes codes [batch, 1..{len(self.quantizer.quantizers)}, frames]; "
                f"got shape {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.bins):
            raise UserError(
                f"HiggsAudio tokenizer: codes must lie in [0, {self.bins}); "
                f"got [{int(codes.min())}, {int(codes.max())}] "
                "(strip stream BOS/EOS ids and revert the delay pattern first)"
            )
        quantized = self.quantizer.decode(codes.to(self.fc2.weight.device).long())
        latents = self.fc2(quantized.transpose(1, 2)).transpose(1, 2)
        return self.acoustic_decoder(latents)


# ---------------------------------------------------------------------- loading


def _fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace ``X.weight_g/X.weight_v`` and ``X.parametrizations.weight.original0/1`` pairs by ``X.weight = g·v/‖v‖``.

    The norm runs over every dimension where ``g`` has size 1 (dim 0 for DAC convs, dim 2 for HuBERT's
    positional conv).
    """
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        for g_suffix, v_suffix in (
            (".weight_g", ".weight_v"),
            (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
        ):
            if key.endswith(g_suffix):
                pairs.setdefault(key[: -len(g_suffix)], {})["g"] = value
                break
            if key.endswith(v_suffix):
                pairs.setdefault(key[: -len(v_suffix)], {})["v"] = value
                break
        else:
            out[key] = value
    for base, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise UserError(f"weight-normed tensor {base}: found only {sorted(pair)} of the (g, v) pair")
        g, v = pair["g"].float(), pair["v"].float()
        dims = [d for d in range(v.dim()) if g.shape[d] == 1]
        norm = v.pow(2).sum(dim=dims, keepdim=True).sqrt() if dims else v.abs()
        out[base + ".weight"] = (g * v / norm).to(pair["v"].dtype)
    return out


def _read_safetensors(directory: Path) -> tuple[dict[str, Tensor], str]:
    """All tensors of ``model.safetensors`` (or the shards its index names) and the sha256 over the files read."""
    from safetensors.torch import load_file

    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        raise UserError(
            f"{directory}: no model.safetensors (or model.safetensors.index.json) — not a tokenizer weights folder"
        )
    state: dict[str, Tensor] = {}
    digest = hashlib.sha256()
    for path in files:
        if not path.is_file():
            raise UserError(f"{directory}: shard {path.name} named by the index is missing")
        digest.update(path.read_bytes())
        try:
            state.update(load_file(str(path)))
        except Exception as exc:  # safetensors raises its own SafetensorError for truncated/altered files
            raise UserError(f"{path}: cannot read safetensors ({exc})") from exc
    return state, digest.hexdigest()


def tokenizer_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers ``HiggsAudioV2TokenizerModel`` state dict → this module's names (unused tensors dropped)."""
    kept = {k: v for k, v in state.items() if not k.startswith(_UNUSED_PREFIXES) and not k.endswith(_UNUSED_SUFFIXES)}
    return _fold_weight_norm(kept)


def load_higgs_tokenizer(directory: str | Path, device: str | torch.device = "cpu") -> HiggsAudioTokenizer:
    """Load a transformers HiggsAudio v2 tokenizer directory into :class:`HiggsAudioTokenizer` (eval mode, float32).

    UserError when the folder is missing, is another model type, or its tensors do not match the
    config (names missing or left over, wrong shapes).
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserError(f"{directory}: no config.json — not a HiggsAudio v2 tokenizer directory")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{config_path}: not valid JSON ({exc})") from exc
    config = HiggsTokenizerConfig.from_dict(data, source=str(config_path))
    raw, sha = _read_safetensors(directory)
    state = tokenizer_state_dict(raw)
    model = HiggsAudioTokenizer(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or bad_shape:
        details = []
        if missing:
            details.append(f"missing {len(missing)} (e.g. {missing[:3]})")
        if extra:
            details.append(f"unexpected {len(extra)} (e.g. {extra[:3]})")
        if bad_shape:
            k = bad_shape[0]
            details.append(
                f"{len(bad_shape)} with another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})"
            )
        raise UserError(f"{directory}: weights do not match its config.json: " + "; ".join(details))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.source = str(directory)
    model.weights_sha256 = sha
    log.info(
        "HiggsAudio tokenizer %s: %d codebooks × %d at %.0f frames/s, %d Hz",
        directory,
        config.num_quantizers,
        config.codebook_size,
        config.frame_rate,
        config.sample_rate,
    )
    return model.eval().to(device)
