"""CLAP score: how well generated audio matches its text, as the cosine between a local CLAP model's text
and audio embeddings (AudioCraft's CLAP text consistency), averaged over (description, audio) pairs.

Audio longer than the feature extractor's window (10 s for LAION CLAP) is embedded window by window and
the normalised window embeddings are averaged and normalised again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tunesmith.eval.embed import AudioClip, HFAudioEmbedder
from tunesmith.eval.modeldirs import require_model_type, weights_hash


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of ``a [N, D]`` and ``b [N, D]`` → ``[N]`` float64 (0 for a zero row)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return np.sum(_normalise(a) * _normalise(b), axis=-1)


def clap_score(text_embeddings: np.ndarray, audio_embeddings: np.ndarray) -> float:
    """Mean cosine of paired text and audio embeddings ``[N, D]`` (1 when identical up to scale)."""
    return float(np.mean(cosine_rows(text_embeddings, audio_embeddings)))


class ClapScorer:
    """A local transformers ``ClapModel`` directory (model + processor: feature extractor and tokenizer)."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 8) -> None:
        from transformers import AutoTokenizer

        require_model_type(path, "clap", ("clap",))
        self.path = Path(path)
        self.audio = HFAudioEmbedder(self.path, device=device, batch_size=batch_size)
        self.model = self.audio.model
        self.device = self.audio.device
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.sample_rate = self.audio.sample_rate
        self.weights_hash = weights_hash(self.path)

    def audio_embeddings(self, clips: Sequence[AudioClip]) -> np.ndarray:
        """One normalised projected embedding per clip ``[N, P]`` (windows averaged)."""
        return np.stack([_normalise(_normalise(e).mean(axis=0)) for e in self.audio.embed(clips)])

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised projected text embeddings ``[N, P]``."""
        import torch

        inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model.get_text_features(**inputs)
        emb = out if not hasattr(out, "pooler_output") else out.pooler_output
        return _normalise(emb.float().cpu().numpy())

    def score(self, clips: Sequence[AudioClip]) -> tuple[float, list[float]]:
        """(mean, per clip) CLAP score of clips against their own descriptions."""
        per_clip = cosine_rows(self.text_embeddings([c.description for c in clips]), self.audio_embeddings(clips))
        return float(per_clip.mean()), [float(v) for v in per_clip]
