"""Audio embedders for FAD: any local transformers audio encoder, or a tunesmith/EnCodec codec's latents.

Every embedder turns clips into per-clip sequences of frame embeddings ``[F_i, D]`` float64 (FAD pools
the frames of a whole set, as VGGish-FAD does; per-clip FAD uses one clip's frames). Each model gets
the audio at its own sample rate: clips are mixed to mono (or to the codec's channels) and resampled
with soxr for each model (:func:`prepare_audio`).

- CLAP (``ClapModel``): the projected audio embedding of each window of the feature extractor's length.
- AST: the pooled embedding of each window of the feature extractor's ``max_length`` frames.
- wav2vec2 / HuBERT / WavLM: the last hidden state (50 frames per second).
- Whisper: the encoder's last hidden state of each 30 s chunk (the extractor's ``chunk_length``), trimmed to
  the audio (50 frames per second).
- codec latents: the codec encoder's continuous output before quantization (``frame_rate`` per second).

Clips of equal length are embedded together in batches of ``batch_size``; others one at a time, so
padding never changes an embedding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError
from tunesmith.eval.modeldirs import read_hf_config, require_model_type, weights_hash

ENCODER_TYPES: tuple[str, ...] = ("clap", "audio-spectrogram-transformer", "wav2vec2", "hubert", "wavlm", "whisper")


@dataclasses.dataclass
class AudioClip:
    """One piece of audio to measure: ``wav [C, T]`` float32 at ``sample_rate`` Hz, with its texts."""

    name: str
    wav: np.ndarray
    sample_rate: int
    description: str = ""
    transcript: str = ""

    @property
    def seconds(self) -> float:
        return self.wav.shape[-1] / self.sample_rate


def prepare_audio(clip: AudioClip, sample_rate: int, channels: int = 1) -> np.ndarray:
    """``clip.wav`` as ``[channels, T']`` float32 at ``sample_rate`` (mixed/copied channels, soxr resampling)."""
    from tunesmith.audio.io import convert_channels, resample

    wav = np.asarray(clip.wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    wav = convert_channels(wav, channels)
    return resample(wav, int(clip.sample_rate), int(sample_rate))


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped by equal length, in chunks of ``batch_size`` (first appearance order)."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(int(n), []).append(i)
    for indices in groups.values():
        for start in range(0, len(indices), max(1, batch_size)):
            yield indices[start : start + max(1, batch_size)]


class Embedder:
    """Base: ``name``, ``sample_rate``, ``dim``, ``weights_hash``; :meth:`embed` clips → ``[F_i, D]`` each."""

    name: str = ""
    kind: str = ""
    sample_rate: int = 16000
    channels: int = 1
    batch_size: int = 8
    weights_hash: str = ""

    def embed_batch(self, wavs: np.ndarray) -> list[np.ndarray]:
        """Equal-length audio ``[B, C, T]`` at :attr:`sample_rate` → ``B`` arrays ``[F, D]``."""
        raise NotImplementedError

    def embed(self, clips: Sequence[AudioClip]) -> list[np.ndarray]:
        """One ``[F_i, D]`` float64 array per clip, in order."""
        wavs = [prepare_audio(c, self.sample_rate, self.channels) for c in clips]
        out: list[np.ndarray | None] = [None] * len(wavs)
        for indices in length_batches([w.shape[-1] for w in wavs], self.batch_size):
            batch = np.stack([wavs[i] for i in indices])
            for i, emb in zip(indices, self.embed_batch(batch), strict=True):
                out[i] = np.asarray(emb, dtype=np.float64).reshape(-1, np.asarray(emb).shape[-1])
        return [e for e in out if e is not None]


# --------------------------------------------------------------------------- transformers encoders


def _windows(wav: np.ndarray, window: int) -> list[np.ndarray]:
    """``[T]`` → windows of ``window`` samples (the last one shorter; at least one)."""
    if window <= 0 or wav.shape[-1] <= window:
        return [wav]
    return [wav[i : i + window] for i in range(0, wav.shape[-1], window) if wav[i : i + window].shape[-1] > 0]


class HFAudioEmbedder(Embedder):
    """A transformers audio encoder directory (see :data:`ENCODER_TYPES`)."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 8) -> None:
        import torch
        from transformers import AutoFeatureExtractor

        self.path = Path(path)
        config = require_model_type(self.path, "fad", ENCODER_TYPES)
        self.kind = str(config["model_type"])
        self.name = f"{self.kind}:{self.path.name}"
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.extractor = AutoFeatureExtractor.from_pretrained(str(self.path))
        self.sample_rate = int(self.extractor.sampling_rate)
        self.model = _load_encoder(self.kind, self.path).to(self.device).eval()
        self.weights_hash = weights_hash(self.path)
        self.window = 0  # samples per window for clip-level models (0 = whole clip)
        if self.kind == "clap":
            self.window = int(getattr(self.extractor, "nb_max_samples", 0) or 0)
        elif self.kind == "audio-spectrogram-transformer":
            hop = 0.01  # AST's Kaldi fbank: 10 ms frame shift
            self.window = int(round(int(self.extractor.max_length) * hop * self.sample_rate))

    def embed_batch(self, wavs: np.ndarray) -> list[np.ndarray]:
        import torch

        mono = wavs[:, 0]
        with torch.no_grad():
            if self.kind in ("clap", "audio-spectrogram-transformer"):
                return [self._clip_level(w) for w in mono]
            if self.kind == "whisper":
                return self._whisper(mono)
            inputs = self.extractor(list(mono), sampling_rate=self.sample_rate, return_tensors="pt")
            hidden = self.model(inputs["input_values"].to(self.device)).last_hidden_state
            return [h.float().cpu().numpy() for h in hidden]

    def _clip_level(self, wav: np.ndarray) -> np.ndarray:
        """One pooled embedding per window ``[W, D]``."""
        windows = _windows(wav, self.window)
        inputs = self.extractor(windows, sampling_rate=self.sample_rate, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if hasattr(v, "to")}
        if self.kind == "clap":
            out = self.model.get_audio_features(**inputs)
            emb = out if not hasattr(out, "pooler_output") else out.pooler_output
        else:
            emb = self.model(**inputs).pooler_output
        return emb.float().cpu().numpy()

    def _whisper(self, mono: np.ndarray) -> list[np.ndarray]:
        """Encoder frames of each chunk (the extractor's ``chunk_length``, 30 s for Whisper) trimmed to the
        audio in it, chunks concatenated: ``[ceil(T / hop), D]`` per clip."""
        chunk = int(self.extractor.n_samples)
        hop = int(self.extractor.hop_length) * 2  # the encoder's second convolution halves the mel frames
        parts: list[list[np.ndarray]] = [[] for _ in range(mono.shape[0])]
        for start in range(0, mono.shape[-1], chunk):
            piece = mono[:, start : start + chunk]
            inputs = self.extractor(list(piece), sampling_rate=self.sample_rate, return_tensors="pt")
            hidden = self.model(inputs["input_features"].to(self.device)).last_hidden_state  # [B, chunk / hop, D]
            keep = max(1, min(hidden.shape[1], math.ceil(piece.shape[-1] / hop)))
            for i, h in enumerate(hidden):
                parts[i].append(h[:keep].float().cpu().numpy())
        return [np.concatenate(p) for p in parts]


def _load_encoder(kind: str, path: Path) -> Any:
    import transformers

    if kind == "clap":
        return transformers.ClapModel.from_pretrained(str(path))
    if kind == "whisper":
        return transformers.WhisperModel.from_pretrained(str(path)).get_encoder()
    return transformers.AutoModel.from_pretrained(str(path))  # AST, wav2vec2, HuBERT, WavLM (base models)


# --------------------------------------------------------------------------- codec latents


class CodecLatentEmbedder(Embedder):
    """The continuous latents of a tunesmith codec (or a transformers EnCodec wrapped by tunesmith):
    the encoder's output ``[B, D, F]`` before quantization, as ``F`` frames of dimension ``D``."""

    kind = "codec-latent"

    def __init__(self, codec: Any, name: str = "", batch_size: int = 8) -> None:
        from tunesmith.models.codec.loading import codec_fingerprint

        self.codec = codec
        self.encoder = _codec_encoder(codec)
        self.sample_rate = int(codec.sample_rate)
        self.channels = int(codec.channels)
        self.batch_size = batch_size
        self.name = f"codec-latent:{name or getattr(codec, 'source', type(codec).__name__)}"
        self.weights_hash = codec_fingerprint(codec)

    @classmethod
    def from_path(cls, path: str | Path, device: str = "cpu", batch_size: int = 8) -> CodecLatentEmbedder:
        from tunesmith.models.codec import load_codec

        return cls(load_codec(path, device=device), name=str(path), batch_size=batch_size)

    def embed_batch(self, wavs: np.ndarray) -> list[np.ndarray]:
        import torch

        param = next(iter(self.encoder.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad():
            latent = self.encoder(torch.from_numpy(np.ascontiguousarray(wavs)).to(device, dtype))
        if hasattr(latent, "last_hidden_state"):
            latent = latent.last_hidden_state
        return [z.float().cpu().numpy().T for z in latent]  # [D, F] → [F, D]


def _codec_encoder(codec: Any) -> Any:
    for owner in (codec, getattr(codec, "model", None)):
        encoder = getattr(owner, "encoder", None) if owner is not None else None
        if encoder is not None and callable(encoder):
            return encoder
    raise UserError(
        f"codec of type {type(codec).__name__} exposes no encoder for latent embeddings; "
        "pass an audio encoder with --embedder-dir"
    )


# --------------------------------------------------------------------------- choosing one


def load_embedder(path: str | Path, device: str = "cpu", batch_size: int = 8) -> Embedder:
    """A transformers audio encoder folder → :class:`HFAudioEmbedder`; a tunesmith codec run/checkpoint/model
    dir or a transformers EnCodec → :class:`CodecLatentEmbedder`; anything else → UserError naming what was
    found and what FAD needs."""
    p = Path(path)
    config = read_hf_config(p) if p.is_dir() else None
    if config is not None and config.get("model_type") in ENCODER_TYPES:
        return HFAudioEmbedder(p, device=device, batch_size=batch_size)
    if p.is_dir():
        try:
            return CodecLatentEmbedder.from_path(p, device=device, batch_size=batch_size)
        except (UserError, KeyError, TypeError, ValueError):
            pass  # not a codec either: say what was found
    require_model_type(p, "fad", ENCODER_TYPES)  # raises with what was found
    raise AssertionError("unreachable")
