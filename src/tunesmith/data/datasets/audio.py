"""Audio crops of a prepared dataset's segments (the codec's training and valid items).

``AudioCrops(dir, split, sample_rate, channels, seconds)[(index, seed)]`` is float32 ``[C, T]`` with
``T = round(seconds * sample_rate)``: a crop whose start is drawn from the sample key's seed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.codec")


def read_crop(path: Path, start_s: float, seconds: float, sample_rate: int, channels: int) -> np.ndarray:
    """``seconds`` of ``path`` from ``start_s`` at ``sample_rate`` Hz / ``channels`` → float32 ``[C, n]``.

    Reads only the needed frames where soundfile can seek; else decodes the file and slices. May be
    shorter than asked at the end of the file.
    """
    import soundfile as sf

    from tunesmith.audio.io import convert_channels, load_audio, resample

    n = int(round(seconds * sample_rate))
    try:
        with sf.SoundFile(str(path)) as f:
            native = f.samplerate
            start = int(round(start_s * native))
            f.seek(min(start, f.frames))
            frames = int(math.ceil(seconds * native)) + (0 if native == sample_rate else 64)
            data = f.read(frames, dtype="float32", always_2d=True).T
        wav = convert_channels(data, channels)
        if native != sample_rate:
            wav = resample(wav, native, sample_rate)
        return np.ascontiguousarray(wav[:, :n])
    except (sf.LibsndfileError, RuntimeError, TypeError):
        wav, _ = load_audio(path, sample_rate=sample_rate, channels=channels)
        start = int(round(start_s * sample_rate))
        return np.ascontiguousarray(wav[:, start : start + n])


class AudioCrops(Dataset):
    """Crops of ``duration`` seconds of a split's segments: ``dataset[(index, seed)]`` → float32 ``[C, T]``.

    The crop start is drawn from ``torch.Generator().manual_seed(seed)``; segments shorter than the crop
    are zero-padded. An unreadable file is logged once and the next segment is used instead.
    """

    def __init__(self, dataset_dir: Path, split: str, sample_rate: int, channels: int, duration: float) -> None:
        from tunesmith.data.manifest import read_manifest, resolve_path

        self.dataset_dir = Path(dataset_dir)
        entries = read_manifest(dataset_dir, split)
        self.paths = [resolve_path(dataset_dir, e) for e in entries]
        self.durations = [float(e.duration) for e in entries]
        self.sample_rate, self.channels = sample_rate, channels
        self.duration = duration
        self.length = int(round(duration * sample_rate))
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, seed = key
        gen = torch.Generator().manual_seed(int(seed))
        for attempt in range(min(len(self.paths), 8)):
            i = (index + attempt) % len(self.paths)
            if i in self._bad:
                continue
            spare = max(self.durations[i] - self.duration, 0.0)
            start = float(torch.rand((), generator=gen)) * spare
            try:
                wav = read_crop(self.paths[i], start, self.duration, self.sample_rate, self.channels)
            except (UserError, OSError, ValueError) as err:
                log.warning("skipping unreadable segment %s: %s", self.paths[i], err)
                self._bad.add(i)
                continue
            out = torch.zeros(self.channels, self.length)
            out[:, : wav.shape[1]] = torch.from_numpy(wav[:, : self.length])
            return out
        raise UserError(f"{self.dataset_dir}: several segments in a row are unreadable; run `tunesmith check data`")
