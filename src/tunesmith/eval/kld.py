"""KLD: how far the audio-tag distribution of generated audio is from that of the reference audio it was
generated for (same description), as AudioCraft pairs them, with tags from a local audio classifier
(e.g. an AST fine-tuned on AudioSet, loadable by ``AutoModelForAudioClassification``).

Each clip's label distribution is the softmax of the classifier's logits, averaged over windows of the
feature extractor's length (AudioCraft uses the softmax too). ``kld`` = ``KL(p_ref || p_gen) =
Σ p_ref · log(p_ref / p_gen)`` with both clipped at :data:`EPS`, averaged over pairs (AudioCraft's ``kld`` /
``kld_pq``); the suite also reports the reverse ``kld_qp`` and their sum ``kld_both``; 0 when the
predictions are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tunesmith.eval.embed import AudioClip, prepare_audio
from tunesmith.eval.modeldirs import read_hf_config, require_model_type, weights_hash

EPS = 1e-6
CLASSIFIER_TYPES: tuple[str, ...] = (
    "audio-spectrogram-transformer",
    "wav2vec2",
    "hubert",
    "wavlm",
    "whisper",
    "clap",
)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, L]`` logits in float64."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Row-wise ``KL(p || q)`` of distributions ``[N, L]`` (clipped at ``eps`` and renormalised) → ``[N]``."""
    p = np.clip(np.asarray(p, np.float64), eps, None)
    q = np.clip(np.asarray(q, np.float64), eps, None)
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def paired_kld(reference: np.ndarray, generated: np.ndarray) -> tuple[float, list[float]]:
    """(mean, per pair) ``KL(reference_i || generated_i)`` over paired label distributions ``[N, L]``."""
    values = kl_divergence(reference, generated)
    return float(values.mean()), [float(v) for v in values]


class TagClassifier:
    """A local transformers audio-classification directory → label distributions ``[N, L]``."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 8) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        self.path = Path(path)
        config = read_hf_config(self.path) if self.path.is_dir() else None
        require_model_type(self.path, "kld", CLASSIFIER_TYPES)
        if not any(a.endswith("ForAudioClassification") for a in (config or {}).get("architectures") or []):
            from tunesmith.errors import UserError
            from tunesmith.eval.modeldirs import describe_found, where_to_put

            raise UserError(
                f"kld: {self.path} holds {describe_found(self.path)}, not a classifier; {where_to_put('kld')}"
            )
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.extractor = AutoFeatureExtractor.from_pretrained(str(self.path))
        self.model = AutoModelForAudioClassification.from_pretrained(str(self.path)).to(self.device).eval()
        self.sample_rate = int(self.extractor.sampling_rate)
        self.labels = [self.model.config.id2label.get(i, str(i)) for i in range(self.model.config.num_labels)]
        self.weights_hash = weights_hash(self.path)
        max_length = getattr(self.extractor, "max_length", None)
        self.window = int(round(int(max_length) * 0.01 * self.sample_rate)) if max_length else 0

    def predict(self, clips: Sequence[AudioClip]) -> np.ndarray:
        """Label distributions ``[N, L]`` (softmax, averaged over windows), in clip order."""
        import torch

        wavs = [prepare_audio(c, self.sample_rate, 1)[0] for c in clips]
        out: list[np.ndarray | None] = [None] * len(wavs)
        for i, w in enumerate(wavs):  # the windows of one clip form one forward pass
            if self.window and w.shape[-1] > self.window:
                windows = [w[s : s + self.window] for s in range(0, w.shape[-1], self.window)]
            else:
                windows = [w]
            inputs = self.extractor(windows, sampling_rate=self.sample_rate, return_tensors="pt", padding=True)
            inputs = {k: v.to(self.device) for k, v in inputs.items() if hasattr(v, "to")}
            with torch.no_grad():
                logits = self.model(**inputs).logits.float().cpu().numpy()
            out[i] = softmax(logits).mean(axis=0)
        return np.stack([p for p in out if p is not None])
