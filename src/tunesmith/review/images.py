"""Mel-spectrogram images of review samples: a log-mel spectrogram on a fixed dB scale, coloured along a
dark-to-bright ramp and written as a PNG (a small encoder of its own, no imaging library) beside each wav.
"""

from __future__ import annotations

import logging
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.review")
MEL_SUFFIX = ".mel.png"


# A dark-to-bright perceptual ramp (position, RGB); values in between are interpolated linearly.
_RAMP: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.00, (0, 0, 4)),
    (0.15, (28, 16, 68)),
    (0.30, (79, 18, 123)),
    (0.45, (129, 37, 129)),
    (0.60, (181, 54, 122)),
    (0.75, (229, 80, 100)),
    (0.87, (251, 135, 97)),
    (1.00, (252, 253, 191)),
)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape ``S``) → uint8 RGB ``S + (3,)`` along the ramp; out-of-range values are clipped."""
    stops = np.array([p for p, _ in _RAMP])
    colors = np.array([c for _, c in _RAMP], dtype=np.float64)
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0)
    rgb = np.stack([np.interp(v, stops, colors[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` uint8 ``[H, W, 3]`` (no filtering, zlib level 6)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected a non-empty [H, W, 3] image, got shape {rgb.shape}")
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # each row: filter type 0, then the pixels
    rows[:, 1:] = rgb.reshape(height, 3 * width)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, deflate, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def mel_image(
    wav: np.ndarray, sample_rate: int, *, n_mels: int = 64, max_width: int = 800, top_db: float = 80.0
) -> np.ndarray:
    """Audio float ``[C, T]`` (or ``[T]``) → log-mel spectrogram image uint8 ``[2 * n_mels, W, 3]``.

    Channels are averaged; FFT size ≈ 64 ms (a power of two), hop a quarter of it. Power is in dB on a fixed
    scale, so that images of different clips compare: the top colour is a full-scale sine's peak band, the
    bottom ``top_db`` below it. Low frequencies at the bottom. ``W`` is the number of frames, max-pooled
    down to at most ``max_width`` columns.
    """
    import torch

    from tunesmith.audio.mel import MelSpectrogram

    x = np.asarray(wav, dtype=np.float32)
    x = x.mean(axis=0) if x.ndim == 2 else x.reshape(-1)
    n_fft = 2 ** max(8, round(math.log2(sample_rate * 0.064)))
    if x.shape[0] <= n_fft:
        x = np.pad(x, (0, n_fft + 1 - x.shape[0]))
    mel = MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)
    with torch.no_grad():
        power = mel(torch.from_numpy(np.ascontiguousarray(x))).double().numpy()  # [n_mels, frames]
    db = 10.0 * np.log10(np.maximum(power, 1e-20))
    full_scale_db = 20.0 * math.log10(n_fft / 4)  # |Hann-windowed DFT|² of a unit sine at its bin: (n_fft / 4)²
    level = (db - (full_scale_db - top_db)) / top_db
    frames = level.shape[1]
    if frames > max_width:  # max-pool groups of columns so that short events stay visible
        group = math.ceil(frames / max_width)
        padded = np.pad(level, ((0, 0), (0, group * math.ceil(frames / group) - frames)), constant_values=-np.inf)
        level = padded.reshape(n_mels, -1, group).max(axis=2)
    image = np.repeat(level[::-1], 2, axis=0)  # high frequencies on top, two pixel rows per band
    return colorize(image)


def write_mel_png(wav_path: Path, png_path: Path) -> None:
    """Render the spectrogram of audio file ``wav_path`` into ``png_path`` (atomically)."""
    from tunesmith.audio.io import load_audio
    from tunesmith.fileio import atomic_path

    wav, sample_rate = load_audio(wav_path)
    data = png_bytes(mel_image(wav, sample_rate))
    with atomic_path(png_path) as tmp:
        tmp.write_bytes(data)


def ensure_mel_png(wav_path: Path) -> Path | None:
    """The spectrogram PNG beside ``wav_path`` (rendered when missing or older); None when the audio is unreadable."""
    png = wav_path.with_name(wav_path.stem + MEL_SUFFIX)
    if png.is_file() and png.stat().st_mtime_ns >= wav_path.stat().st_mtime_ns:
        return png
    try:
        write_mel_png(wav_path, png)
    except (UserError, ValueError, RuntimeError) as err:
        log.warning("no spectrogram for %s: %s", wav_path, err)
        return None
    return png
