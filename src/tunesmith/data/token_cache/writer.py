"""Writing a token cache: each split's shards, its index and infos, resumable shard by shard."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.token_cache.encoder import ShardEncoder
from tunesmith.data.token_cache.layout import (
    DEFAULT_SHARD_SIZE,
    FORMAT_VERSION,
    cache_dir_for,
    read_json,
    storage_dtype,
)
from tunesmith.data.token_cache.lock import exclusive_cache
from tunesmith.errors import UserError
from tunesmith.fileio import atomic_path, atomic_write_text, sha256_file
from tunesmith.runtime import EpochProgress, progress_enabled

log = logging.getLogger("tunesmith.encode")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False))


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


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
    } | ({"weights_sha256": str(codec.weights_sha256)} if getattr(codec, "weights_sha256", "") else {})


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
    from tunesmith.data.manifest import manifest_path, read_manifest

    started = time.perf_counter()
    manifest = manifest_path(dataset_dir, split)
    manifest_hash = sha256_file(manifest)
    entries = read_manifest(dataset_dir, split)
    split_dir.mkdir(parents=True, exist_ok=True)
    meta = read_json(split_dir / "meta.json")
    if meta is not None and not _split_is_current(meta, fingerprint, manifest_hash, shard_size):
        log.warning("%s: the dataset's %s manifest changed since it was encoded; re-encoding it", split_dir, split)
        meta = None
    if meta is None:  # nothing trustworthy here: start the split from scratch
        _clear_split(split_dir)
    for stray in split_dir.glob(".*.tmp*"):  # partial files of a killed run
        stray.unlink(missing_ok=True)
    n_shards = (len(entries) + shard_size - 1) // shard_size
    damaged = _remove_damaged_shards(split_dir, n_shards)
    if meta is not None and meta.get("complete") and not damaged:
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
    todo = [s for s in range(n_shards) if not (split_dir / f"shard-{s:05d}.json").is_file()]
    todo_segments = sum(min(shard_size, len(entries) - s * shard_size) for s in todo)
    audio_seconds = 0.0
    encoded = 0
    enabled = progress_enabled(progress) and todo_segments > 0
    bar = EpochProgress(f"encode {split}", todo_segments, enabled=enabled, log_every=max(1, todo_segments // 10))
    bar_started = time.perf_counter()

    def on_done(seconds: float) -> None:
        nonlocal audio_seconds, encoded
        audio_seconds += seconds
        encoded += seconds > 0
        bar.update({"audio_s/s": audio_seconds / max(time.perf_counter() - bar_started, 1e-9)})

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            worker = ShardEncoder(codec, dataset_dir, batch_size, device, pool)
            for shard in todo:
                part = entries[shard * shard_size : (shard + 1) * shard_size]
                codes, skipped = worker.run(part, on_done)
                _store_shard(split_dir, shard, shard * shard_size, part, codes, skipped, codec, dataset_dir)
    finally:
        bar.close()
    segments, skipped_count = _finish_split(split_dir, meta, n_shards)
    wall = time.perf_counter() - started
    meta.update(complete=True, segments=segments, skipped=skipped_count)
    meta["stats"] = {"audio_seconds": audio_seconds, "wall_seconds": wall}
    _write_json(split_dir / "meta.json", meta)
    return SplitStats(split, segments, skipped_count, encoded, audio_seconds, wall)


def _store_shard(
    split_dir: Path,
    shard: int,
    first_line: int,
    part: list[Any],
    codes: dict[int, np.ndarray],
    skipped: dict[int, str],
    codec: Any,
    dataset_dir: Path,
) -> None:
    """Write shard ``shard`` (manifest lines from ``first_line``): its codes array, then its index."""
    from tunesmith.data.manifest import read_info

    rows, arrays, infos = [], [], []
    offset = 0
    for pos in range(len(part)):
        if pos not in codes:
            continue
        arrays.append(codes[pos])
        rows.append([first_line + pos, offset, int(codes[pos].shape[0])])
        offset += int(codes[pos].shape[0])
        try:
            infos.append(read_info(dataset_dir, part[pos]))
        except UserError as err:
            log.warning("%s", err)
            infos.append({})
    k = int(codec.n_q)
    data = np.concatenate(arrays, 0) if arrays else np.zeros((0, k), storage_dtype(int(codec.bins)))
    array_path = split_dir / f"shard-{shard:05d}.npy"
    _write_npy(array_path, data)
    skipped_rows = [{"line": first_line + p, "reason": r} for p, r in sorted(skipped.items())]
    index = {"rows": rows, "infos": infos, "skipped": skipped_rows}
    index.update(npy_bytes=array_path.stat().st_size, npy_sha256=sha256_file(array_path))
    _write_json(split_dir / f"shard-{shard:05d}.json", index)


def shard_problem(split_dir: Path, shard: int) -> str | None:
    """Why shard ``shard`` cannot be trusted (missing, truncated, altered, rows past its end), or None.

    Checks the size and sha256 its index recorded (caches written before they were recorded: the array's
    own header against its size, and the rows against its length)."""
    array_path = split_dir / f"shard-{shard:05d}.npy"
    part = read_json(split_dir / f"shard-{shard:05d}.json")
    if not isinstance(part, dict) or not isinstance(part.get("rows"), list):
        return "its index is missing or unreadable"
    if not array_path.is_file():
        return f"{array_path.name} is missing"
    size = array_path.stat().st_size
    if "npy_bytes" in part:
        if size != part["npy_bytes"]:
            return f"{array_path.name} is truncated or altered ({size} bytes, its index says {part['npy_bytes']})"
        if sha256_file(array_path) != part.get("npy_sha256"):
            return f"{array_path.name} is corrupted (sha256 differs from its index)"
    try:
        frames = np.load(array_path, mmap_mode="r").shape[0]
    except (OSError, ValueError) as err:
        return f"{array_path.name} is unreadable ({err})"
    if any(row[1] + row[2] > frames for row in part["rows"]):
        return f"{array_path.name} holds {frames} frames, fewer than its index needs"
    return None


def _remove_damaged_shards(split_dir: Path, n_shards: int) -> list[int]:
    """Remove (to re-encode) every shard of a split whose index exists but whose array is damaged."""
    damaged = []
    for shard in range(n_shards):
        if not (split_dir / f"shard-{shard:05d}.json").is_file():
            continue
        problem = shard_problem(split_dir, shard)
        if problem is None:
            continue
        log.warning("%s: shard %d: %s; encoding it again", split_dir, shard, problem)
        (split_dir / f"shard-{shard:05d}.json").unlink()
        (split_dir / f"shard-{shard:05d}.npy").unlink(missing_ok=True)
        damaged.append(shard)
    return damaged


def _finish_split(split_dir: Path, meta: dict, n_shards: int) -> tuple[int, int]:
    index, infos, skipped = [], [], 0
    for shard in range(n_shards):
        part = read_json(split_dir / f"shard-{shard:05d}.json")
        if part is None:
            raise UserError(f"{split_dir}: shard {shard} is missing or unreadable; run `tunesmith encode` again")
        index.extend([row[0], shard, row[1], row[2]] for row in part["rows"])
        infos.extend(part["infos"])
        skipped += len(part["skipped"])
    array = np.asarray(index, dtype=np.int64).reshape(-1, 4)
    meta["shard_bytes"] = [(split_dir / f"shard-{shard:05d}.npy").stat().st_size for shard in range(n_shards)]
    _write_npy(split_dir / "index.npy", array)
    text = "".join(json.dumps(info, ensure_ascii=False, default=str) + "\n" for info in infos)
    atomic_write_text(split_dir / "infos.jsonl", text, fsync=False)
    return len(index), skipped


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
    described = read_json(cache_dir / "codec.json")
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
