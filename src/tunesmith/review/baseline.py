"""The unigram baseline of an LM run: the cross-entropy of a model that ignores all context and predicts each
codebook's codes by their frequencies in the run's training token cache.

Units match the LM's logged ``loss`` (``tunesmith.models.lm.model.LMModel.loss``): natural-log cross-entropy
(nats) per code, averaged over the real codes (frames × codebooks; pattern and length padding excluded), so the
mean over codebooks of the per-codebook entropies ``H_k = -Σ_c p_k(c) ln p_k(c)`` (every codebook has the same
number of targets). ``ce_qK`` compares with ``H_k``, ``ppl`` with ``exp(mean)``. Counted on every frame of every
training segment (the LM sees random crops of them). An LM whose loss is not below it has learned nothing
beyond the code frequencies.

The numbers are stored in ``RUN/samples/review/unigram.json``, keyed by the cache split they were counted on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np

from tunesmith.errors import UserError
from tunesmith.review.checkpoints import REVIEW_DIR
from tunesmith.review.run_config import config_section, resolve_relative

log = logging.getLogger("tunesmith.review")

BASELINE_FILE = "unigram.json"


@dataclasses.dataclass
class UnigramBaseline:
    """Per-codebook unigram cross-entropies (nats per code), their mean (the ``loss`` baseline), how many
    codes were counted and the token cache split they come from."""

    per_codebook: list[float]
    tokens: int
    source: str

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_codebook)) if self.per_codebook else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean)


def code_counts(shards: object, num_codebooks: int, bins: int = 0) -> np.ndarray:
    """How often each code occurs in each of the first ``num_codebooks`` codebooks of a token cache split
    (:class:`~tunesmith.data.token_cache.TokenShards`): int64 ``[K, bins]`` (``bins`` grows to fit the codes)."""
    counts = np.zeros((num_codebooks, max(int(bins), 1)), dtype=np.int64)
    for i in range(len(shards)):  # type: ignore[arg-type]
        codes = np.asarray(shards.codes(i)[:num_codebooks], dtype=np.int64)  # type: ignore[attr-defined]  # [K, F]
        if codes.size == 0:
            continue
        if codes.min() < 0:
            raise UserError(f"{getattr(shards, 'dir', 'token cache')}: negative code in segment {i}")
        width = max(counts.shape[1], int(codes.max()) + 1)
        if width > counts.shape[1]:
            counts = np.pad(counts, ((0, 0), (0, width - counts.shape[1])))
        for k, row in enumerate(codes):
            counts[k] += np.bincount(row, minlength=counts.shape[1])
    return counts


def unigram_cross_entropy(counts: np.ndarray) -> np.ndarray:
    """Per-codebook entropy of the code frequencies ``counts [K, bins]`` in nats: ``float64 [K]`` (the
    cross-entropy, on the same codes, of predicting each code by its frequency)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=1) + 0.0  # + 0.0: a single code gives 0, not -0


def train_cache_dir(run_dir: Path, config: dict) -> Path | None:
    """The training split of the token cache an LM run trained on: ``DATA/tokens/KEY/train`` from the run's
    ``data.json`` (its dataset folder and cache key); None when the run did not record one."""
    from tunesmith.data.token_cache import TOKENS_DIR
    from tunesmith.engine.data_identity import read_recorded

    recorded = read_recorded(run_dir) or {}
    key = recorded.get("token_cache")
    if not key:
        return None
    candidates = [Path(str(recorded["source"]))] if recorded.get("source") else []
    data = resolve_relative(str(config.get("data") or ""), run_dir) if config.get("data") else None
    candidates += [data] if data is not None else []
    for folder in candidates:
        cache = folder / TOKENS_DIR / str(key)
        if (cache / "train" / "meta.json").is_file():
            return cache
    return None


def lm_unigram_baseline(run_dir: Path, config: dict, num_codebooks: int | None = None) -> UnigramBaseline | None:
    """The unigram baseline of an LM run (``num_codebooks``: the codebooks its loss counts, default the run's
    ``model.num_codebooks`` or the cache's), from the stored numbers when the cache split is unchanged; None
    (with the reason logged) when the training token cache cannot be found or read."""
    from tunesmith.data.token_cache import TokenShards
    from tunesmith.fileio import atomic_write_json

    cache = train_cache_dir(run_dir, config)
    if cache is None:
        log.info("no unigram baseline: %s records no token cache (data.json) that is still there", run_dir)
        return None
    try:
        shards = TokenShards(cache, "train")
    except UserError as err:
        log.warning("no unigram baseline: %s", err)
        return None
    k = int(num_codebooks or config_section(config, "model").get("num_codebooks") or shards.n_q)
    k = min(k, shards.n_q)
    key = {"cache": str(cache / "train"), "fingerprint": shards.fingerprint, "codebooks": k,
           "manifest_sha256": shards.meta.get("manifest_sha256"), "segments": len(shards)}  # fmt: skip
    stored_path = run_dir / "samples" / REVIEW_DIR / BASELINE_FILE
    try:
        stored = json.loads(stored_path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return UnigramBaseline([float(v) for v in stored["per_codebook"]], int(stored["tokens"]), key["cache"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    counts = code_counts(shards, k, shards.bins)
    baseline = UnigramBaseline([float(v) for v in unigram_cross_entropy(counts)], int(counts.sum()), key["cache"])
    payload = {"key": key, "per_codebook": baseline.per_codebook, "mean": baseline.mean, "tokens": baseline.tokens,
               "units": "nats per code"}  # fmt: skip
    atomic_write_json(stored_path, payload)
    return baseline
