"""Cached reference statistics for FAD: the Gaussian of a reference set's embeddings, stored once per
(reference set, embedding model) in ``<cache>/<key>.npz`` with a ``<key>.json`` describing it.

The key hashes the reference manifest's digest, the segments chosen from it, how they were cut, and the
embedding model's kind, sample rate and weights hash: re-preparing the dataset, choosing other segments
or changing the model's weights computes new statistics; anything else reuses them. Files are written
atomically (tunesmith.fileio), so a killed run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.eval.frechet import GaussianStats

log = logging.getLogger(__name__)

CACHE_DIR = ".eval_cache"


def reference_key(reference: dict[str, Any], embedder: dict[str, Any]) -> str:
    """A short hex key of the reference set's identity and the embedder's identity (plain JSON dicts)."""
    payload = json.dumps({"reference": reference, "embedder": embedder}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_stats(cache_dir: Path, key: str) -> GaussianStats | None:
    """The cached statistics under ``key``, or None (absent or unreadable: logged, recomputed)."""
    path = Path(cache_dir) / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return GaussianStats.from_arrays(data)
    except (OSError, ValueError, KeyError) as err:
        log.warning("ignoring unreadable reference statistics %s (%s); recomputing", path, err)
        return None


def save_stats(cache_dir: Path, key: str, stats: GaussianStats, description: dict[str, Any]) -> Path:
    """Write ``<key>.npz`` then ``<key>.json`` atomically; returns the npz path."""
    from tunesmith.fileio import atomic_path, atomic_write_json

    path = Path(cache_dir) / f"{key}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **stats.to_arrays())
    atomic_write_json(Path(cache_dir) / f"{key}.json", {**description, "n": stats.n, "dim": stats.dim})
    return path


def cached_reference_stats(
    cache_dir: Path | None,
    reference: dict[str, Any],
    embedder: dict[str, Any],
    compute: Callable[[], GaussianStats],
) -> tuple[GaussianStats, bool]:
    """(statistics, whether they came from the cache); ``compute`` runs only on a miss. No cache with None."""
    if cache_dir is None:
        return compute(), False
    key = reference_key(reference, embedder)
    stats = load_stats(cache_dir, key)
    if stats is not None:
        log.info("reference statistics from the cache (%s)", Path(cache_dir) / f"{key}.npz")
        return stats, True
    stats = compute()
    try:
        save_stats(cache_dir, key, stats, {"reference": reference, "embedder": embedder})
    except OSError as err:  # a read-only cache is not a reason to fail the evaluation
        log.warning("could not cache the reference statistics in %s: %s", cache_dir, err)
    return stats, False
