"""Encoding one shard's segments: audio loaded in background threads, equal lengths batched together.

Segments are never zero-padded into one batch: only segments of exactly the same length share a batch, so
a segment's codes never depend on its neighbours (HiggsAudio's HuBERT attends over the whole clip). A
segment shorter than the codec's ``min_samples`` (when it declares one) is skipped with the reason."""

from __future__ import annotations

import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.token_cache.layout import storage_dtype
from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.encode")

MAX_PENDING_SAMPLES = 1 << 24  # audio samples held before the largest equal-length group is encoded early


class ShardEncoder:
    """Encodes one shard's segments: loads audio in background threads, batches equal lengths."""

    def __init__(self, codec: Any, dataset_dir: Path, batch_size: int, device: str, pool: ThreadPoolExecutor):
        self.codec, self.dataset_dir, self.batch_size = codec, dataset_dir, batch_size
        self.device, self.pool = device, pool
        self.min_samples = int(getattr(codec, "min_samples", 1) or 1)  # shortest input the codec can encode

    def _load(self, entry: Any) -> tuple[np.ndarray | None, str]:
        from tunesmith.audio.io import load_audio
        from tunesmith.data.manifest import resolve_path

        path = resolve_path(self.dataset_dir, entry)
        try:
            wav, _ = load_audio(path, sample_rate=self.codec.sample_rate, channels=self.codec.channels)
        except (UserError, OSError, ValueError, RuntimeError) as err:
            return None, str(err) if str(path) in str(err) else f"{path}: {err}"
        if wav.shape[1] == 0:
            return None, f"{path}: no audio"
        if wav.shape[1] < self.min_samples:
            need = f"the codec needs {self.min_samples} at {self.codec.sample_rate} Hz"
            return None, f"{path}: too short to encode ({wav.shape[1]} samples; {need})"
        return wav, ""

    def _encode(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        batch = torch.from_numpy(np.stack(wavs)).to(self.device)
        with torch.inference_mode():
            codes = self.codec.encode(batch)
        return [c.T.astype(storage_dtype(int(self.codec.bins))) for c in codes.cpu().numpy()]  # [F, K] each

    def run(self, entries: list[Any], on_done: Any) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """Codes ``[F, K]`` by position in ``entries``, and the reason for each skipped position."""
        codes: dict[int, np.ndarray] = {}
        skipped: dict[int, str] = {}
        groups: OrderedDict[int, list[tuple[int, np.ndarray]]] = OrderedDict()
        pending = 0

        def flush(length: int) -> None:
            nonlocal pending
            items = groups.pop(length)
            pending -= length * len(items)
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                for (pos, wav), c in zip(chunk, self._encode([w for _, w in chunk]), strict=True):
                    codes[pos] = c
                    on_done(wav.shape[1] / self.codec.sample_rate)

        loads = [self.pool.submit(self._load, e) for e in entries]
        for pos, future in enumerate(loads):
            wav, reason = future.result()
            if wav is None:
                skipped[pos] = reason
                log.warning("skipping segment: %s", reason)
                on_done(0.0)
                continue
            length = wav.shape[1]
            groups.setdefault(length, []).append((pos, wav))
            pending += length
            if len(groups[length]) == self.batch_size:
                flush(length)
            elif pending > MAX_PENDING_SAMPLES:
                flush(max(groups, key=lambda n: n * len(groups[n])))
        for length in list(groups):
            flush(length)
        return codes, skipped
