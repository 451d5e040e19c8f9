"""Token cache: every segment of a prepared dataset encoded once by a codec, read back by memory map.

Layout (``KEY`` = first 16 hex digits of :func:`~tunesmith.models.codec.codec_fingerprint`, which covers
the codec's weights, config and bandwidth, so another codec never reads stale tokens)::

    DIR/tokens/KEY/codec.json              what encoded it (fingerprint, rates, n_q, bins, dtype, source)
    DIR/tokens/KEY/<split>/meta.json       fingerprint, manifest hash, shard size, complete flag, stats
    DIR/tokens/KEY/<split>/shard-NNNNN.npy int16 (int32 when bins > 32768) ``[frames, K]``: the shard's
                                           segments one after another along frames
    DIR/tokens/KEY/<split>/shard-NNNNN.json its index (manifest line, offset, frames) and sidecar infos
    DIR/tokens/KEY/<split>/index.npy       int64 ``[N, 4]``: manifest line, shard, offset, frames
    DIR/tokens/KEY/<split>/infos.jsonl     sidecar metadata of each indexed segment

Shards cover fixed runs of manifest lines and appear atomically (array first, then its index), so a
killed encode resumes at the first missing shard and never duplicates work. Within a shard, segments of
equal length are batched together (no padding, so a segment's codes never depend on its neighbours).
A changed manifest (re-prepared dataset) makes the split stale: it is re-encoded from scratch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.encode")

FORMAT_VERSION = 1
TOKENS_DIR = "tokens"
KEY_LENGTH = 16
DEFAULT_SHARD_SIZE = 256  # segments per shard
MAX_PENDING_SAMPLES = 1 << 24  # audio samples held before the largest equal-length group is encoded early


def storage_dtype(bins: int) -> np.dtype:
    """Smallest signed integer type holding codes ``0 .. bins - 1``."""
    return np.dtype(np.int16) if bins <= 2**15 else np.dtype(np.int32)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cache_dir_for(dataset_dir: str | Path, fingerprint: str) -> Path:
    return Path(dataset_dir) / TOKENS_DIR / fingerprint[:KEY_LENGTH]


# --------------------------------------------------------------------------- encoding


@dataclass
class SplitStats:
    split: str
    segments: int
    skipped: int
    encoded_now: int  # segments encoded by this call (the rest were already cached)
    audio_seconds: float  # encoded by this call
    wall_seconds: float

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def _codec_description(codec: Any, fingerprint: str, source: str) -> dict[str, Any]:
    from tunesmith import __version__

    bandwidth = getattr(codec, "bandwidth", None)
    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "sample_rate": int(codec.sample_rate),
        "channels": int(codec.channels),
        "frame_rate": float(codec.frame_rate),
        "bins": int(codec.bins),
        "n_q": int(codec.n_q),
        "bandwidth_kbps": float(bandwidth) if bandwidth is not None else None,
        "dtype": storage_dtype(int(codec.bins)).name,
        "codec_source": source,
        "created_by": f"tunesmith {__version__}",
    }


class _ShardEncoder:
    """Encodes one shard's segments: loads audio in background threads, batches equal lengths."""

    def __init__(self, codec: Any, dataset_dir: Path, batch_size: int, device: str, pool: ThreadPoolExecutor):
        self.codec, self.dataset_dir, self.batch_size = codec, dataset_dir, batch_size
        self.device, self.pool = device, pool

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


def _split_is_current(meta: Any, fingerprint: str, manifest_hash: str, shard_size: int) -> bool:
    return (
        isinstance(meta, dict)
        and meta.get("format_version") == FORMAT_VERSION
        and meta.get("fingerprint") == fingerprint
        and meta.get("manifest_sha256") == manifest_hash
        and meta.get("shard_size") == shard_size
    )


_SPLIT_FILES = ("meta.json", "index.npy", "infos.jsonl")


def _clear_split(split_dir: Path) -> None:
    for path in split_dir.iterdir():
        if path.is_file() and (path.name.startswith(("shard-", ".")) or path.name in _SPLIT_FILES):
            path.unlink()


def _encode_split(
    codec: Any,
    dataset_dir: Path,
    split_dir: Path,
    split: str,
    fingerprint: str,
    batch_size: int,
    shard_size: int,
    device: str,
    progress: bool,
) -> SplitStats:
    from tunesmith.data.manifest import manifest_path, read_info, read_manifest

    started = time.perf_counter()
    manifest = manifest_path(dataset_dir, split)
    manifest_hash = _sha256_file(manifest)
    entries = read_manifest(dataset_dir, split)
    split_dir.mkdir(parents=True, exist_ok=True)
    meta = _read_json(split_dir / "meta.json")
    if meta is not None and not _split_is_current(meta, fingerprint, manifest_hash, shard_size):
        log.warning("%s: the dataset's %s manifest changed since it was encoded; re-encoding it", split_dir, split)
        meta = None
    if meta is None:  # nothing trustworthy here: start the split from scratch
        _clear_split(split_dir)
    for stray in split_dir.glob(".*.tmp-*"):  # partial files of a killed run
        stray.unlink(missing_ok=True)
    if meta is not None and meta.get("complete"):
        return SplitStats(split, meta["segments"], meta["skipped"], 0, 0.0, time.perf_counter() - started)
    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "split": split,
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "manifest_sha256": manifest_hash,
        "manifest_entries": len(entries),
        "shard_size": shard_size,
        "dtype": storage_dtype(int(codec.bins)).name,
        "n_q": int(codec.n_q),
        "complete": False,
    }
    _write_json(split_dir / "meta.json", meta)
    n_shards = (len(entries) + shard_size - 1) // shard_size
    todo = [s for s in range(n_shards) if not (split_dir / f"shard-{s:05d}.json").is_file()]
    todo_segments = sum(min(shard_size, len(entries) - s * shard_size) for s in todo)
    audio_seconds = 0.0
    encoded = 0
    with _Progress(f"encode {split}", todo_segments, progress) as bar, ThreadPoolExecutor(max_workers=2) as pool:
        worker = _ShardEncoder(codec, dataset_dir, batch_size, device, pool)

        def on_done(seconds: float) -> None:
            nonlocal audio_seconds, encoded
            audio_seconds += seconds
            encoded += seconds > 0
            bar.advance(seconds)

        for shard in todo:
            part = entries[shard * shard_size : (shard + 1) * shard_size]
            codes, skipped = worker.run(part, on_done)
            rows, arrays, infos = [], [], []
            offset = 0
            for pos in range(len(part)):
                if pos not in codes:
                    continue
                line = shard * shard_size + pos
                arrays.append(codes[pos])
                rows.append([line, offset, int(codes[pos].shape[0])])
                offset += int(codes[pos].shape[0])
                try:
                    infos.append(read_info(dataset_dir, part[pos]))
                except UserError as err:
                    log.warning("%s", err)
                    infos.append({})
            k = int(codec.n_q)
            data = np.concatenate(arrays, 0) if arrays else np.zeros((0, k), storage_dtype(int(codec.bins)))
            _write_npy(split_dir / f"shard-{shard:05d}.npy", data)
            skipped_rows = [{"line": shard * shard_size + p, "reason": r} for p, r in sorted(skipped.items())]
            _write_json(split_dir / f"shard-{shard:05d}.json", {"rows": rows, "infos": infos, "skipped": skipped_rows})
    segments, skipped_count = _finish_split(split_dir, meta, n_shards)
    wall = time.perf_counter() - started
    meta.update(complete=True, segments=segments, skipped=skipped_count)
    meta["stats"] = {"audio_seconds": audio_seconds, "wall_seconds": wall}
    _write_json(split_dir / "meta.json", meta)
    return SplitStats(split, segments, skipped_count, encoded, audio_seconds, wall)


def _finish_split(split_dir: Path, meta: dict, n_shards: int) -> tuple[int, int]:
    index, infos, skipped = [], [], 0
    for shard in range(n_shards):
        part = _read_json(split_dir / f"shard-{shard:05d}.json")
        if part is None:
            raise UserError(f"{split_dir}: shard {shard} is missing or unreadable; run `tunesmith encode` again")
        index.extend([row[0], shard, row[1], row[2]] for row in part["rows"])
        infos.extend(part["infos"])
        skipped += len(part["skipped"])
    array = np.asarray(index, dtype=np.int64).reshape(-1, 4)
    _write_npy(split_dir / "index.npy", array)
    text = "".join(json.dumps(info, ensure_ascii=False, default=str) + "\n" for info in infos)
    tmp = split_dir / f".infos.jsonl.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, split_dir / "infos.jsonl")
    return len(index), skipped


class _Progress:
    """A rich progress bar with audio seconds per second, or periodic log lines when disabled."""

    def __init__(self, title: str, total: int, enabled: bool):
        from tunesmith.runtime import progress_enabled

        self.title, self.total = title, total
        self.enabled = progress_enabled(enabled) and total > 0
        self.done, self.seconds, self.started = 0, 0.0, time.perf_counter()
        self._logged_at = self.started  # without a bar: a line per 10 % of segments, at most one per 2 s
        self._bar = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total, rate="")
        return self

    def advance(self, seconds: float) -> None:
        self.done += 1
        self.seconds += seconds
        rate = self.seconds / max(time.perf_counter() - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=1, rate=f"{rate:.1f} audio s/s")
        elif self.total and self.done % max(1, self.total // 10) == 0 and self.done < self.total:
            now = time.perf_counter()
            if now - self._logged_at >= 2.0:
                self._logged_at = now
                log.info("%s: %d/%d segments, %.1f audio s/s", self.title, self.done, self.total, rate)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextlib.contextmanager
def exclusive_cache(cache_dir: Path) -> Iterator[None]:
    """Holds ``cache_dir/.lock`` while encoding: a second process (an `encode` beside a `train lm` building
    the same cache) waits, logged, and then finds the splits finished instead of encoding them twice.
    Advisory ``flock``; released by the kernel if the holder dies. No-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(cache_dir / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            log.info("%s: %s is encoding this cache; waiting for it to finish", cache_dir, holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_token_cache(
    dataset_dir: str | Path,
    codec: Any,
    bandwidth: float | None = None,
    batch_size: int = 16,
    progress: bool = True,
    *,
    device: str = "cpu",
    shard_size: int = DEFAULT_SHARD_SIZE,
    splits: tuple[str, ...] = ("train", "valid"),
    stats: list[SplitStats] | None = None,
) -> Path:
    """Encode whatever of ``dataset_dir`` is not cached yet for this codec; returns the cache folder.

    ``codec`` is a codec object or a path for :func:`~tunesmith.models.codec.load_codec`; ``bandwidth``
    (kbps) selects its codebooks (None = the codec's current setting). Splits without a manifest are
    skipped. Resumable: a killed call picks up at the first missing shard. ``stats``, when given, receives
    one :class:`SplitStats` per split.
    """
    from tunesmith.data.manifest import manifest_path
    from tunesmith.models.codec import codec_fingerprint, load_codec

    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise UserError(f"{dataset_dir}: dataset folder not found (make one with `tunesmith prepare ... --out DIR`)")
    if batch_size < 1 or shard_size < 1:
        raise UserError(f"batch_size and shard_size must be at least 1, got {batch_size} and {shard_size}")
    present = [s for s in splits if manifest_path(dataset_dir, s).is_file()]
    if not present:
        raise UserError(f"{dataset_dir}: no manifests under egs/ ({', '.join(splits)}); run `tunesmith prepare`")
    if isinstance(codec, (str, Path)):
        source = str(codec)
        codec = load_codec(codec, bandwidth=bandwidth, device=device)
    else:
        source = str(getattr(codec, "source", type(codec).__name__))
        if bandwidth is not None:
            codec.set_bandwidth(bandwidth)
    if hasattr(codec, "eval"):
        codec.eval()
    fingerprint = codec_fingerprint(codec)
    cache_dir = cache_dir_for(dataset_dir, fingerprint)
    cache_dir.mkdir(parents=True, exist_ok=True)
    described = _read_json(cache_dir / "codec.json")
    if described is not None and described.get("fingerprint") != fingerprint:
        raise UserError(
            f"{cache_dir}: holds tokens of another codec (fingerprint {described.get('fingerprint')}, "
            f"this one is {fingerprint}); delete the folder"
        )
    if described is None:
        _write_json(cache_dir / "codec.json", _codec_description(codec, fingerprint, source))
    with exclusive_cache(cache_dir):
        for split in present:
            result = _encode_split(
                codec, dataset_dir, cache_dir / split, split, fingerprint, batch_size, shard_size, device, progress
            )
            if result.encoded_now:
                log.info(
                    "%s: encoded %d segments (%.1f s of audio) in %.1f s: %.1f audio s/s",
                    split,
                    result.encoded_now,
                    result.audio_seconds,
                    result.wall_seconds,
                    result.audio_seconds_per_second,
                )
            if stats is not None:
                stats.append(result)
    return cache_dir


# --------------------------------------------------------------------------- reading


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
        meta = _read_json(self.dir / "meta.json")
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
        if manifest.is_file() and _sha256_file(manifest) != meta.get("manifest_sha256"):
            raise UserError(
                f"{self.dir}: stale token cache: {manifest} changed since it was encoded; run `tunesmith encode` again"
            )
        self.meta = meta
        self.codec_info = _read_json(self.cache_dir / "codec.json") or {}
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
