"""Reading a token cache split back: memory-mapped shards, crops in token space, sidecar infos."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.token_cache.layout import KEY_LENGTH, read_json
from tunesmith.errors import UserError
from tunesmith.fileio import sha256_file


class TokenShards:
    """One split of a token cache: ``codes(i)`` → int ``[K, F]``, random ``crop`` in token space, ``info(i)``.

    ``fingerprint`` (optional) must match the cache's codec, else UserError (stale cache). The manifest the
    split was encoded from is re-hashed when still present: a changed dataset is reported as stale.
    Arrays are memory-mapped; workers of a DataLoader each open their own maps.
    """

    def __init__(self, cache_dir: str | Path, split: str, fingerprint: str | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.split = split
        self.dir = self.cache_dir / split
        meta = read_json(self.dir / "meta.json")
        if not isinstance(meta, dict):
            raise UserError(f"{self.dir}: no token cache for split {split!r}; run `tunesmith encode DATA --codec ...`")
        if not meta.get("complete"):
            raise UserError(f"{self.dir}: the token cache is incomplete (an encode was interrupted); run it again")
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            raise UserError(
                f"{self.dir}: stale token cache: encoded by codec {str(meta.get('fingerprint'))[:KEY_LENGTH]}, "
                f"expected {fingerprint[:KEY_LENGTH]}; run `tunesmith encode` with this codec"
            )
        manifest = Path(meta.get("dataset_dir", "")) / "egs" / split / "data.jsonl"
        if manifest.is_file() and sha256_file(manifest) != meta.get("manifest_sha256"):
            raise UserError(
                f"{self.dir}: stale token cache: {manifest} changed since it was encoded; run `tunesmith encode` again"
            )
        for shard, expected in enumerate(meta.get("shard_bytes") or []):
            path = self.dir / f"shard-{shard:05d}.npy"
            size = path.stat().st_size if path.is_file() else None
            if size != expected:
                raise UserError(
                    f"{path}: damaged token shard ({size} bytes, the cache's index says {expected}); run "
                    "`tunesmith encode` again: it re-encodes the damaged shard"
                )
        self.meta = meta
        self.codec_info = read_json(self.cache_dir / "codec.json") or {}
        index = np.load(self.dir / "index.npy")
        self._line, self._shard, self._offset, self._frames = (index[:, j].copy() for j in range(4))
        self._maps: dict[int, np.ndarray] = {}
        self._infos: list[dict] | None = None

    # -------------------------------------------------------------- sizes
    def __len__(self) -> int:
        return len(self._line)

    @property
    def n_q(self) -> int:
        return int(self.meta["n_q"])

    @property
    def bins(self) -> int:
        return int(self.codec_info.get("bins", 0))

    @property
    def frame_rate(self) -> float:
        return float(self.codec_info.get("frame_rate", 0.0))

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def num_frames(self, i: int) -> int:
        return int(self._frames[i])

    @property
    def total_frames(self) -> int:
        return int(self._frames.sum())

    def manifest_line(self, i: int) -> int:
        """Line (0-based) of segment ``i`` in the split's data.jsonl."""
        return int(self._line[i])

    # -------------------------------------------------------------- data
    def _map(self, shard: int) -> np.ndarray:
        array = self._maps.get(shard)
        if array is None:
            array = np.load(self.dir / f"shard-{shard:05d}.npy", mmap_mode="r")
            self._maps[shard] = array
        return array

    def _rows(self, i: int, start: int, stop: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"segment {i} out of range (split {self.split!r} has {len(self)})")
        shard, offset = int(self._shard[i]), int(self._offset[i])
        return np.ascontiguousarray(self._map(shard)[offset + start : offset + stop].T)

    def codes(self, i: int) -> np.ndarray:
        """All codes of segment ``i``: ``[K, F]`` (the cache's integer dtype; ``.astype(np.int64)`` for torch)."""
        return self._rows(i, 0, self.num_frames(i))

    def crop(self, i: int, num_frames: int, generator: Any = None) -> tuple[np.ndarray, int]:
        """A random window of ``num_frames`` frames of segment ``i`` → (codes ``[K, n]``, start frame).

        ``generator``: ``torch.Generator``, ``np.random.Generator`` or None (start 0). A segment shorter than
        ``num_frames`` is returned whole (``n < num_frames``, start 0).
        """
        total = self.num_frames(i)
        spare = total - num_frames
        if spare <= 0 or generator is None:
            start = 0
        elif isinstance(generator, np.random.Generator):
            start = int(generator.integers(0, spare + 1))
        else:
            import torch

            start = int(torch.randint(0, spare + 1, (1,), generator=generator))
        return self._rows(i, start, start + min(num_frames, total)), start

    def info(self, i: int) -> dict:
        """Sidecar metadata of segment ``i`` (description, genre, bpm, key, track_id, ...)."""
        if self._infos is None:
            with open(self.dir / "infos.jsonl", encoding="utf-8") as f:
                self._infos = [json.loads(line) for line in f if line.strip()]
        return self._infos[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.codes(i)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}  # memory maps are reopened in each process
        return state
