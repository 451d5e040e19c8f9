"""Deterministic test melodies (no tests here): shared by tests and tests/fixtures/melody_chroma/make_reference.py."""

from __future__ import annotations

import numpy as np

NOTES_HZ = [261.63, 329.63, 392.0, 493.88, 440.0, 349.23, 293.66, 523.25]  # C E G B A F D C
NOTE_CLASSES = [0, 4, 7, 11, 9, 5, 2, 0]  # their pitch classes (C = 0)


def melody_signal(sample_rate: int, seconds: float, notes_hz: list[float] | None = None) -> np.ndarray:
    """Float32 [T]: equal-length tones (fundamental + 2 harmonics, continuous phase) plus faint seeded noise."""
    notes = np.asarray(notes_hz or NOTES_HZ)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    note = np.minimum((t / (seconds / len(notes))).astype(int), len(notes) - 1)
    phase = 2 * np.pi * np.cumsum(notes[note]) / sample_rate
    wav = sum(0.5 / k * np.sin(k * phase) for k in (1, 2, 3))
    noise = np.random.default_rng(0).standard_normal(t.shape)
    return (0.4 * wav + 0.01 * noise).astype(np.float32)


# --------------------------------------------------------------------------- a pitch-class "codec"

PITCH_MARKER = "pitch_codec.json"


def pitch_codec_class():
    """A toy codec whose tokens are pitch classes (for melody-following tests that need no trained codec).

    encode: waveform [B, 1, T] at 8 kHz → the one-hot chroma's argmax per frame (tunesmith.audio.chroma with
    n_fft 4096, hop 1024: 7.8 frames/s) → Long [B, 1, 1 + T // 1024]; decode: each code → 1024 samples of a
    tone of that pitch class (octave 4, + 2 harmonics). The chroma of decoded codes gives the codes back, so a
    generation's chroma measures what the LM chose, not codec quality.
    """
    import torch
    from torch import nn

    from tunesmith.audio.chroma import ChromaSettings, chroma_features

    class PitchCodec(nn.Module):
        sample_rate, channels, bins, n_q, hop = 8000, 1, 12, 1, 1024
        frame_rate = sample_rate / hop
        supported_bandwidths = [1.0]
        bandwidth = 1.0
        settings = ChromaSettings(sample_rate=8000, n_fft=4096, hop_length=1024)

        def set_bandwidth(self, kbps: float) -> None:
            return None

        def config_dict(self) -> dict:
            return {"pitch_codec": 1}

        def encode(self, wav: torch.Tensor) -> torch.Tensor:
            return chroma_features(wav[:, 0].float(), self.settings).argmax(dim=-1)[:, None].long()

        def decode(self, codes: torch.Tensor) -> torch.Tensor:
            freqs = 261.63 * 2.0 ** (codes[:, 0].double() / 12.0)  # [B, F]
            step = freqs.repeat_interleave(self.hop, dim=1) / self.sample_rate
            phase = 2 * torch.pi * torch.cumsum(step, dim=1)
            wav = sum(0.5 / k * torch.sin(k * phase) for k in (1, 2, 3))
            return (0.4 * wav).float()[:, None]

    return PitchCodec


def make_pitch_codec_dir(root) -> object:
    """A folder ``load_codec`` opens as the pitch codec (registers the loader; idempotent)."""
    import json
    from pathlib import Path

    from tunesmith.models.codec.loading import _LOADERS, register_codec_loader

    def is_pitch(path: Path) -> bool:
        return (Path(path) / PITCH_MARKER).is_file()

    if not any(getattr(p, "__name__", "") == "is_pitch" for p, _ in _LOADERS):
        register_codec_loader(is_pitch, lambda path, bandwidth, device: pitch_codec_class()())
    folder = Path(root) / "pitch_codec"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PITCH_MARKER).write_text(json.dumps({"kind": "pitch classes"}))
    return folder
