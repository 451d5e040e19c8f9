"""Chroma cosine: how closely generated audio follows the pitch classes of its reference (the melody of
melody-conditioned generation), computed without any model.

By default both sides get MusicGen-melody's chroma analysis (tunesmith.audio.chroma.chroma_energy: 0.512 s
window, 0.128 s hop at 32 kHz, each frame divided by its maximum, not one-hot), as AudioCraft's chroma
cosine metric does. Any chroma function ``(wav [T], sample_rate) -> [F, 12]`` can be passed instead;
:func:`stft_chroma` is a plain STFT chroma (Hann window, power folded onto the 12 equal-tempered pitch
classes at A4 = 440 Hz, frames L2-normalised), used when tunesmith.audio.chroma is not available.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tunesmith.eval.embed import AudioClip, prepare_audio

ChromaFn = Callable[[np.ndarray, int], np.ndarray]
CHROMA_RATE = 22050  # Hz: the audio is resampled to this before the STFT
N_FFT, HOP = 2048, 512
FMIN, FMAX = 55.0, 5000.0  # Hz: bins outside are ignored (rumble, hiss)


def stft_chroma(wav: np.ndarray, sample_rate: int, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Mono ``wav [T]`` → chroma ``[F, 12]`` float64, frames L2-normalised (silent frames stay zero).
    Pitch class 0 is C."""
    x = np.asarray(wav, np.float64).reshape(-1)
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    frames = 1 + (x.shape[0] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[index] * np.hanning(n_fft), axis=-1)) ** 2  # [F, n_fft/2 + 1]
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    use = (freqs >= FMIN) & (freqs <= min(FMAX, sample_rate / 2))
    pitch_class = np.mod(np.round(12 * np.log2(freqs[use] / 440.0) + 69), 12).astype(int)
    fold = np.zeros((use.sum(), 12))
    fold[np.arange(use.sum()), pitch_class] = 1.0
    chroma = spec[:, use] @ fold
    norm = np.linalg.norm(chroma, axis=-1, keepdims=True)
    return chroma / np.where(norm > 1e-12, norm, 1.0)


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


def default_chroma_fn() -> tuple[ChromaFn, str]:
    """(function, name): MusicGen's chroma when tunesmith.audio.chroma is there, else :func:`stft_chroma`."""
    try:
        import tunesmith.audio.chroma  # noqa: F401
    except ImportError:
        return (lambda wav, rate: stft_chroma(prepare_audio_array(wav, rate), CHROMA_RATE)), "stft-chroma"
    return musicgen_chroma, "musicgen-chroma"


def prepare_audio_array(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono ``wav [T]`` resampled to :data:`CHROMA_RATE`."""
    from tunesmith.audio.io import resample

    return resample(np.asarray(wav, np.float32)[None], int(sample_rate), CHROMA_RATE)[0]


def clip_chroma(clip: AudioClip, chroma_fn: ChromaFn | None = None) -> np.ndarray:
    """Chroma ``[F, 12]`` of a clip (``chroma_fn`` of its mono audio; default :func:`default_chroma_fn`)."""
    if chroma_fn is None:
        chroma_fn = default_chroma_fn()[0]
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
