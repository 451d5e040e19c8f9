"""Fréchet distance and FAD: against an independent scipy implementation, closed forms, singular covariances."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.linalg

from tunesmith.eval.frechet import (
    SINGULAR_EPS,
    GaussianStats,
    fad,
    fad_infinity,
    frechet_distance,
    gaussian_stats,
    regularization_for,
)


def reference_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root of the (non-symmetric) product."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def _random_gaussian(rng, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ a.T + shift


@pytest.mark.parametrize("d", [4, 16, 64])
def test_matches_independent_scipy_implementation(d):
    rng = np.random.default_rng(d)
    x, y = _random_gaussian(rng, 500, d), _random_gaussian(rng, 400, d, shift=0.3)
    ours = frechet_distance(gaussian_stats(x), gaussian_stats(y))
    assert ours == pytest.approx(reference_frechet(x, y), rel=1e-6)


def test_a_set_against_itself_is_zero_and_distances_are_symmetric():
    rng = np.random.default_rng(0)
    x, y = _random_gaussian(rng, 300, 8), _random_gaussian(rng, 300, 8, shift=1.0)
    sx, sy = gaussian_stats(x), gaussian_stats(y)
    assert frechet_distance(sx, sx) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(sx, sy) == pytest.approx(frechet_distance(sy, sx), rel=1e-9)


def test_a_mean_shift_adds_its_squared_length():
    """Same covariance, means apart by delta: FD = |delta|² exactly (the trace terms cancel)."""
    rng = np.random.default_rng(1)
    x = _random_gaussian(rng, 200, 6)
    base = gaussian_stats(x)
    for length in (0.5, 2.0, 7.0):
        delta = rng.standard_normal(6)
        delta *= length / np.linalg.norm(delta)
        shifted = GaussianStats(base.mu + delta, base.sigma.copy(), base.n)
        assert frechet_distance(base, shifted) == pytest.approx(length**2, rel=1e-9)


def test_closed_form_for_diagonal_covariances():
    """Diagonal covariances: FD = |mu1 - mu2|² + Σ (sqrt(a_i) - sqrt(b_i))²."""
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, -2.0, 0.5])
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    got = frechet_distance(GaussianStats(mu1, np.diag(a), 100), GaussianStats(mu2, np.diag(b), 100))
    assert got == pytest.approx(expected, rel=1e-12)


def test_singular_covariances_are_regularised_explicitly_and_stay_correct(caplog):
    """Fewer samples than dimensions: a warning, an eps stated in the result, and the closed forms still hold."""
    rng = np.random.default_rng(2)
    d = 32
    x = rng.standard_normal((10, d))  # rank 9 covariance in 32 dimensions
    with caplog.at_level(logging.WARNING):
        sx = gaussian_stats(x)
    assert "singular" in caplog.text
    assert np.linalg.matrix_rank(sx.sigma) < d
    eps = regularization_for(sx)
    assert eps == pytest.approx(SINGULAR_EPS * np.trace(sx.sigma) / d)
    assert frechet_distance(sx, sx) == pytest.approx(0.0, abs=1e-9)
    delta = np.full(d, 0.25)
    shifted = GaussianStats(sx.mu + delta, sx.sigma.copy(), sx.n)
    assert frechet_distance(sx, shifted) == pytest.approx(float(delta @ delta), rel=1e-7)
    # two different singular covariances: finite, and equal to the formula on the regularised matrices
    y = rng.standard_normal((12, d)) + 0.5
    sy = gaussian_stats(y, warn=False)
    got = frechet_distance(sx, sy)
    eye = np.eye(d) * regularization_for(sx, sy)
    s1, s2 = sx.sigma + eye, sy.sigma + eye
    expected = float(
        np.sum((sx.mu - sy.mu) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    )
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-5)
    result = fad(y, sx, extrapolate=False)
    assert result.regularization > 0 and any("singular" in w for w in result.warnings)


def test_fad_reports_counts_and_extrapolates_to_infinite_n():
    """FAD at small N is biased upwards; on average over independent sets the 1/N fit removes most of it."""
    d = 8
    rng = np.random.default_rng(0)
    reference = gaussian_stats(rng.standard_normal((50000, d)), warn=False)
    delta = np.full(d, 1 / np.sqrt(d))  # true FAD = |delta|² = 1
    for true, shift in ((0.0, 0 * delta), (1.0, delta)):
        plain, extrapolated = [], []
        for draw in range(20):
            result = fad(rng.standard_normal((200, d)) + shift, reference, seed=draw)
            plain.append(result.fad)
            extrapolated.append(result.fad_inf)
        bias, bias_inf = np.mean(plain) - true, np.mean(extrapolated) - true
        assert bias > 0.08 and abs(bias_inf) < 0.6 * bias, (true, bias, bias_inf)
    assert result.n == 200 and result.n_reference == 50000 and result.dim == d
    assert any("biased" in w for w in result.warnings)
    assert result.fad_inf_slope > 0 and len(result.subset_sizes) >= 2 and result.subset_sizes[-1] == 200
    assert fad_infinity(rng.standard_normal((3, d)), reference) is None  # too few for a fit
    assert fad(rng.standard_normal((50, d)), reference, extrapolate=False).fad_inf is None


def test_bad_embeddings_are_refused():
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(gaussian_stats(np.eye(3)), gaussian_stats(np.eye(4)))
