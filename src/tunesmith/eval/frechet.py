"""Fréchet distance between Gaussians fitted to embeddings, and FAD with its sample-size bias.

All statistics are float64. No general matrix square root is taken: with ``S2 = F Fᵀ`` (Cholesky, or the
symmetric square root when ``S2`` is numerically singular) ``S1 S2`` has the eigenvalues of the symmetric
positive semi-definite ``Fᵀ S1 F``, so ``tr sqrt(S1 S2)`` is the sum of the square roots of those
(``eigvalsh``): real, exact up to rounding, and about 5× cheaper than an eigendecomposition with vectors at
768 dimensions. scipy's ``sqrtm`` of the non-symmetric product is the independent check in the tests.

Singular covariances: with ``n`` embeddings of dimension ``d`` the covariance has rank ≤ ``n - 1``; when
``n <= d`` :func:`gaussian_stats` warns and :func:`frechet_distance` adds ``eps · I`` to both covariances
(``eps`` = :data:`SINGULAR_EPS` × the mean variance), recorded as ``regularization`` in :class:`FadResult`.

FAD is biased upwards at small ``n`` (Chung et al. 2025, "KAD"; Gui et al. 2024, "Adapting FAD"): the
expected value is close to ``FAD∞ + b / n``. :func:`fad_infinity` fits that line over random subsets of
several sizes and reports the intercept; below :data:`MIN_RELIABLE_SAMPLES` a warning says so.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SINGULAR_EPS = 1e-6  # relative regularisation added to singular covariances (× mean variance)
MIN_RELIABLE_SAMPLES = 1000  # frames: below this FAD is strongly biased upwards (warned; FAD∞ reported)


@dataclasses.dataclass
class GaussianStats:
    """Mean ``mu [D]`` and covariance ``sigma [D, D]`` (float64) of ``n`` embeddings."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    _factors: dict[float, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def factor(self, eps: float = 0.0) -> np.ndarray:
        """``F`` with ``F Fᵀ = sigma + eps·I``: the Cholesky factor, or the symmetric square root when the matrix
        is numerically singular. Kept for reuse: a reference set's factor is computed once."""
        if eps not in self._factors:
            m = self.sigma + np.eye(self.dim) * eps
            try:
                self._factors[eps] = np.linalg.cholesky(m)
            except np.linalg.LinAlgError:
                self._factors[eps] = _sqrt_psd(m)
        return self._factors[eps]

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mu": self.mu, "sigma": self.sigma, "n": np.asarray(self.n, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: Any) -> GaussianStats:
        return cls(np.asarray(arrays["mu"], np.float64), np.asarray(arrays["sigma"], np.float64), int(arrays["n"]))


def gaussian_stats(embeddings: np.ndarray, *, warn: bool = True) -> GaussianStats:
    """Embeddings ``[N, D]`` → :class:`GaussianStats` (unbiased covariance, ``N - 1`` in the denominator)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need embeddings [N >= 2, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    n, d = x.shape
    if warn and n <= d:
        log.warning(
            "%d embeddings of dimension %d: the covariance is singular; it is regularised with %g × mean variance "
            "and the FAD is not comparable to FADs from more samples",
            n,
            d,
            SINGULAR_EPS,
        )
    return GaussianStats(x.mean(axis=0), np.cov(x, rowvar=False).reshape(d, d), n)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative rounding eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, factor1: np.ndarray | None = None) -> float:
    """``tr sqrt(S1 S2)`` for symmetric PSD ``S1``, ``S2``: with ``S1 = F Fᵀ`` the product ``S1 S2`` has the
    eigenvalues of the symmetric PSD ``Fᵀ S2 F``, so the trace is the sum of their square roots (eigvalsh, no
    eigenvectors). ``factor1`` = such an ``F`` when already known (default: the symmetric square root)."""
    root = _sqrt_psd(s1) if factor1 is None else factor1
    inner = root.T @ s2 @ root
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def regularization_for(*stats: GaussianStats) -> float:
    """The ``eps`` added to the covariances' diagonals: 0 unless some set has ``n <= dim``."""
    if not any(s.n <= s.dim for s in stats):
        return 0.0
    scale = float(np.mean([np.trace(s.sigma) / max(s.dim, 1) for s in stats]))
    return SINGULAR_EPS * (scale if scale > 0 else 1.0)


def frechet_distance(a: GaussianStats, b: GaussianStats, eps: float | None = None) -> float:
    """``|mu_a - mu_b|² + tr(S_a + S_b - 2 sqrt(S_a S_b))`` in float64; ``eps`` (default
    :func:`regularization_for`) is added to both diagonals. Clipped at 0 (rounding can go a hair below)."""
    if a.dim != b.dim:
        raise ValueError(f"embedding dimensions differ: {a.dim} vs {b.dim}")
    eps = regularization_for(a, b) if eps is None else eps
    eye = np.eye(a.dim) * eps
    s1, s2 = a.sigma + eye, b.sigma + eye
    diff = a.mu - b.mu
    # tr sqrt(S_a S_b) = tr sqrt(S_b S_a): b (the reference, by convention) is factored, once per b
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s2, s1, b.factor(eps)))
    return max(value, 0.0)


@dataclasses.dataclass
class FadResult:
    """FAD of a set against reference statistics, with what it rests on."""

    fad: float
    n: int  # embeddings (frames) of the evaluated set
    n_reference: int
    dim: int
    regularization: float = 0.0
    fad_inf: float | None = None  # intercept of FAD vs 1/n over subsets (None when too few embeddings)
    fad_inf_slope: float | None = None
    subset_sizes: list[int] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fad_infinity(
    embeddings: np.ndarray,
    reference: GaussianStats,
    *,
    num_points: int = 5,
    min_size: int | None = None,
    repeats: int = 2,
    seed: int = 0,
) -> tuple[float, float, list[int]] | None:
    """(FAD∞, slope, subset sizes): least-squares line ``FAD(n) = FAD∞ + slope / n`` over random subsets
    (without replacement) of ``num_points`` sizes from ``min_size`` to all ``N`` rows of ``embeddings``
    ``[N, D]``, ``repeats`` draws per size. None when ``N`` is too small for two distinct sizes."""
    x = np.asarray(embeddings, dtype=np.float64)
    n = x.shape[0]
    low = min_size if min_size is not None else max(2, n // 4)
    if n < 4 or low >= n:
        return None
    sizes = sorted({int(round(s)) for s in np.linspace(low, n, num_points)})
    if len(sizes) < 2:
        return None
    rng = np.random.default_rng(seed)
    inv, values = [], []
    for size in sizes:
        for _ in range(1 if size == n else repeats):
            rows = rng.choice(n, size=size, replace=False)
            stats = gaussian_stats(x[rows], warn=False)
            values.append(frechet_distance(stats, reference))
            inv.append(1.0 / size)
    slope, intercept = np.polyfit(np.asarray(inv), np.asarray(values), 1)
    return float(intercept), float(slope), sizes


def fad(
    embeddings: np.ndarray,
    reference: GaussianStats,
    *,
    extrapolate: bool = True,
    seed: int = 0,
) -> FadResult:
    """FAD of ``embeddings [N, D]`` against ``reference``, with FAD∞ and small-sample warnings."""
    stats = gaussian_stats(embeddings, warn=False)
    eps = regularization_for(stats, reference)
    result = FadResult(frechet_distance(stats, reference, eps), stats.n, reference.n, stats.dim, eps)
    if min(stats.n, reference.n) <= stats.dim:
        result.warnings.append(
            f"{min(stats.n, reference.n)} embeddings ≤ dimension {stats.dim}: singular covariance, "
            f"regularised with eps={eps:.3g}"
        )
    if stats.n < MIN_RELIABLE_SAMPLES:
        result.warnings.append(
            f"only {stats.n} embeddings (< {MIN_RELIABLE_SAMPLES}): FAD is biased upwards at small N; "
            "compare FAD∞ or FADs from equal N only"
        )
    if extrapolate:
        fitted = fad_infinity(embeddings, reference, seed=seed)
        if fitted is not None:
            result.fad_inf, result.fad_inf_slope, result.subset_sizes = fitted
    for message in result.warnings:
        log.warning("FAD: %s", message)
    return result
