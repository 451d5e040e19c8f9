"""Chroma cosine: how closely generated audio follows the pitch classes of its reference (the melody of
melody-conditioned generation), computed without any model.

By default both sides get MusicGen-melody's chroma analysis (tunesmith.audio.chroma.chroma_energy, the one
chroma implementation: 0.512 s window, 0.128 s hop at 32 kHz, each frame divided by its maximum, not one-hot),
as AudioCraft's chroma cosine metric does. Any chroma function ``(wav [T], sample_rate) -> [F, 12]`` can be
passed instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tunesmith.eval.embed import AudioClip, prepare_audio

ChromaFn = Callable[[np.ndarray, int], np.ndarray]


def chroma_cosine(reference: np.ndarray, generated: np.ndarray) -> float:
    """Mean frame-wise cosine of two chroma sequences ``[F, 12]`` over their common length, frames where
    either side is silent left out; NaN when no frame is left."""
    a, b = np.asarray(reference, np.float64), np.asarray(generated, np.float64)
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n], b[:n]
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    keep = (na > 1e-12) & (nb > 1e-12)
    if not keep.any():
        return float("nan")
    return float(np.mean(np.sum(a[keep] * b[keep], -1) / (na[keep] * nb[keep])))


def musicgen_chroma(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """MusicGen-melody's chroma energy ``[F, 12]`` of mono ``wav [T]`` (tunesmith.audio.chroma) at 32 kHz."""
    import torch

    from tunesmith.audio.chroma import ChromaSettings, chroma_energy
    from tunesmith.audio.io import resample

    settings = ChromaSettings()
    x = resample(np.asarray(wav, np.float32)[None], int(sample_rate), settings.sample_rate)[0]
    return chroma_energy(torch.from_numpy(np.ascontiguousarray(x)), settings).double().numpy()


def clip_chroma(clip: AudioClip, chroma_fn: ChromaFn | None = None) -> np.ndarray:
    """Chroma ``[F, 12]`` of a clip (``chroma_fn`` of its mono audio; default :func:`musicgen_chroma`)."""
    if chroma_fn is None:
        chroma_fn = musicgen_chroma
    out = np.asarray(chroma_fn(prepare_audio(clip, clip.sample_rate, 1)[0], clip.sample_rate), np.float64)
    return out.T if out.ndim == 2 and out.shape[0] == 12 and out.shape[1] != 12 else out


def paired_chroma_cosine(
    references: Sequence[AudioClip], generated: Sequence[AudioClip], chroma_fn: ChromaFn | None = None
) -> tuple[float, list[float]]:
    """(mean, per pair) chroma cosine of each generated clip against its reference."""
    values = [
        chroma_cosine(clip_chroma(r, chroma_fn), clip_chroma(g, chroma_fn))
        for r, g in zip(references, generated, strict=True)
    ]
    finite = [v for v in values if np.isfinite(v)]
    return (float(np.mean(finite)) if finite else float("nan")), values
