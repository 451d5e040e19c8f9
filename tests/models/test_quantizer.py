"""Residual VQ: code range and dtype, round trip, EMA learning, dead-code restart, dropout, errors."""

from __future__ import annotations

import pytest
import torch

from tunesmith.models.codec.quantizer import EMACodebook, ResidualVectorQuantizer, kmeans, nearest


def test_nearest_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    x, book = torch.randn(200, 8, generator=gen), torch.randn(32, 8, generator=gen)
    brute = torch.cdist(x, book).argmin(1)
    assert torch.equal(nearest(x, book), brute)


def test_codes_are_long_in_range_and_round_trip() -> None:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=16, n_q=3, bins=64, kmeans_init=False).eval()
    with torch.no_grad():  # later stages much finer than the first: decode → encode must give the codes back
        for k, layer in enumerate(rvq.layers):
            layer.embed.mul_(0.02**k)
    codes = torch.randint(0, 64, (2, 3, 10))
    latent = rvq.decode(codes)
    assert latent.shape == (2, 16, 10)
    again = rvq.encode(latent)
    assert again.dtype == torch.long and again.shape == (2, 3, 10)
    assert torch.equal(again, codes)
    # on arbitrary latents every stage picks the nearest code to its residual (checked by brute force)
    x = torch.randn(2, 16, 10)
    found = rvq.encode(x)
    assert int(found.min()) >= 0 and int(found.max()) < 64
    residual = x.transpose(1, 2).reshape(-1, 16)
    for k, layer in enumerate(rvq.layers):
        brute = torch.cdist(residual, layer.embed).argmin(1)
        assert torch.equal(found[:, k].reshape(-1), brute)
        residual = residual - layer.embed[brute]


def test_more_codebooks_reduce_error_after_training() -> None:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=8, n_q=4, bins=32, kmeans_iters=10, dead_code_threshold=0.0)
    data = torch.randn(4, 8, 256)
    rvq.train()
    for _ in range(20):
        out = rvq(data)
    assert out.codes.shape == (4, 4, 256) and out.codes.dtype == torch.long
    rvq.eval()
    errors = [(rvq.decode(rvq.encode(data, n_q=k)) - data).pow(2).mean().item() for k in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.5 * data.pow(2).mean().item()


def test_straight_through_gradient_and_commitment() -> None:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=8, n_q=2, bins=16)
    x = torch.randn(2, 8, 30, requires_grad=True)
    out = rvq(x)
    assert out.commit_loss.item() >= 0
    (out.quantized.sum() + out.commit_loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # straight-through: d sum(quantized)/dx is the identity, plus the commitment term's gradient
    assert torch.allclose(x.grad.mean(), torch.tensor(1.0), atol=0.2)


def test_kmeans_init_and_ema_move_codes_to_cluster_means() -> None:
    torch.manual_seed(0)
    centers = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [0.0, -6.0]])
    data = centers.repeat_interleave(100, 0) + 0.01 * torch.randn(300, 2)
    book = EMACodebook(2, 3, decay=0.5, kmeans_iters=20, dead_code_threshold=0.0).train()
    for _ in range(10):
        book(data)
    found = book.embed[book.embed[:, 0].argsort()]
    expected = centers[centers[:, 0].argsort()]
    # k-means may merge two clusters from an unlucky seed; check each true centre is close to some code
    dist = torch.cdist(expected, found).min(1).values
    assert (dist < 0.1).sum() >= 2
    centers_found, counts = kmeans(data, 3, 20)
    assert counts.sum() == 300


def test_dead_codes_are_restarted_from_batch_vectors() -> None:
    torch.manual_seed(0)
    book = EMACodebook(4, 16, decay=0.9, kmeans_init=False, dead_code_threshold=1.0).train()
    with torch.no_grad():
        book.embed.fill_(100.0)  # every code far away: the nearest one wins everything
        book.embed[0] = 0.0
        book.embed_avg.copy_(book.embed)
    data = torch.randn(64, 4)
    restarted = book.update(data, torch.zeros(64, dtype=torch.long))
    assert restarted == 15  # code 0 holds everything, every other code fell below the threshold
    assert book.embed[1:].abs().max() < 10  # restarted codes are batch vectors now
    assert torch.all(book.cluster_size[1:] == 1.0)


def test_quantizer_dropout_varies_codebooks_in_training_only() -> None:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=8, n_q=4, bins=16, q_dropout=True, kmeans_iters=2)
    rvq.train()
    seen = {rvq(torch.randn(2, 8, 20)).n_q for _ in range(40)}
    assert seen == {1, 2, 3, 4}
    rvq.eval()
    assert rvq(torch.randn(2, 8, 20)).n_q == 4


def test_bad_codes_are_rejected() -> None:
    rvq = ResidualVectorQuantizer(dim=8, n_q=2, bins=16)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        rvq.decode(torch.full((1, 2, 5), 16))
    with pytest.raises(ValueError, match="integers"):
        rvq.decode(torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="1 <= K <= 2"):
        rvq.decode(torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="n_q=3"):
        rvq.encode(torch.randn(1, 8, 5), n_q=3)
