"""Melody chroma cached next to the tokens: each segment's chroma computed once, read back as crops.

For a melody-conditioned LM (``model.conditioner.chroma``) every segment of a token-cache split gets its
one-hot chroma (:func:`tunesmith.audio.chroma.chroma_features` with the LM's analysis settings), stored as
one pitch class per chroma frame::

    DIR/tokens/KEY/<split>/chroma-SKEY.npy    uint8 [total chroma frames]: the segments one after another
    DIR/tokens/KEY/<split>/chroma-SKEY.json   settings, the split's manifest sha256, offset and frames per segment

``SKEY`` hashes the analysis settings, so another analysis never reads these. The pair appears atomically
(array first); a changed manifest (the split was re-encoded) makes it stale and it is computed again.
:meth:`ChromaTrack.window` returns the chroma under a token crop (same start and duration in seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.data.token_cache.layout import read_json
from tunesmith.errors import UserError
from tunesmith.fileio import atomic_path, atomic_write_text

log = logging.getLogger("tunesmith.encode")


def settings_key(settings: Any) -> str:
    text = json.dumps(
        [settings.sample_rate, settings.n_fft, settings.hop_length, settings.n_chroma, "whole-mix"], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ChromaTrack:
    """The cached chroma of one split: ``window(i, start, frames, frame_rate)`` → one-hot float [n, bins]."""

    def __init__(self, classes: np.ndarray, offsets: np.ndarray, frames: np.ndarray, settings: Any) -> None:
        self.classes, self.offsets, self.frames, self.settings = classes, offsets, frames, settings

    def __len__(self) -> int:
        return len(self.offsets)

    def classes_of(self, i: int) -> np.ndarray:
        """Pitch class per chroma frame of segment ``i``: uint8 [frames]."""
        return self.classes[int(self.offsets[i]) : int(self.offsets[i]) + int(self.frames[i])]

    def window(self, i: int, start_frame: int, num_frames: int, frame_rate: float) -> torch.Tensor:
        """One-hot chroma float [n, bins] under codec frames ``start_frame .. start_frame + num_frames``
        (``frame_rate`` codec frames per second); at least one chroma frame."""
        rate = self.settings.frame_rate
        classes = self.classes_of(i)
        first = min(int(round(start_frame / frame_rate * rate)), max(len(classes) - 1, 0))
        count = max(1, int(round(num_frames / frame_rate * rate)))
        picked = torch.from_numpy(classes[first : first + count].astype(np.int64))
        return torch.nn.functional.one_hot(picked, self.settings.n_chroma).float()


def ensure_chroma(shards: Any, dataset_dir: str | Path, settings: Any) -> ChromaTrack:
    """The chroma of every segment of a token-cache split (``shards``: a TokenShards), computed when missing.

    Runs torch on the calling thread (the audio is read and analysed one segment at a time)."""
    from tunesmith.audio.chroma import chroma_features
    from tunesmith.audio.io import load_audio
    from tunesmith.data.manifest import read_manifest, resolve_path

    key = settings_key(settings)
    folder = Path(shards.dir)
    array_path, index_path = folder / f"chroma-{key}.npy", folder / f"chroma-{key}.json"
    manifest_hash = shards.meta.get("manifest_sha256")
    index = read_json(index_path)
    if isinstance(index, dict) and index.get("manifest_sha256") == manifest_hash and array_path.is_file():
        classes = np.load(array_path, mmap_mode="r")
        if classes.shape[0] == sum(index["frames"]) and len(index["frames"]) == len(shards):
            return ChromaTrack(classes, np.asarray(index["offsets"]), np.asarray(index["frames"]), settings)
        log.warning("%s: does not match its index; computing the chroma again", array_path)
    entries = read_manifest(dataset_dir, shards.split)
    parts, offsets, frames = [], [], []
    offset = 0
    for i in range(len(shards)):
        path = resolve_path(dataset_dir, entries[shards.manifest_line(i)])
        try:
            wav, _ = load_audio(path, sample_rate=settings.sample_rate, channels=1)
        except (UserError, OSError, ValueError, RuntimeError) as err:
            raise UserError(f"{path}: cannot read it for its melody chroma ({err})") from err
        classes = chroma_features(torch.from_numpy(wav[0]), settings).argmax(dim=-1).numpy().astype(np.uint8)
        parts.append(classes)
        offsets.append(offset)
        frames.append(len(classes))
        offset += len(classes)
    data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    with atomic_path(array_path) as tmp:
        np.save(tmp, data)
    description = {
        "settings": [settings.sample_rate, settings.n_fft, settings.hop_length, settings.n_chroma],
        "analysis": "whole mix (no source separation), argmax one-hot as MusicGen-melody",
        "manifest_sha256": manifest_hash,
        "offsets": offsets,
        "frames": frames,
    }
    atomic_write_text(index_path, json.dumps(description))
    log.info("%s: melody chroma of %d segments cached in %s", shards.split, len(frames), array_path.name)
    return ChromaTrack(data, np.asarray(offsets), np.asarray(frames), settings)
