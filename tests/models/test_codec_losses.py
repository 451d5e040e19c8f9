"""Codec losses and the gradient balancer against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.audio.metrics import si_snr
from tunesmith.models.codec.balancer import GradientBalancer
from tunesmith.models.codec.discriminator import MultiScaleSTFTDiscriminator
from tunesmith.models.codec.losses import (
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    sisnr_loss,
)


def test_mel_loss_zero_on_identity_and_grows_with_error() -> None:
    torch.manual_seed(0)
    loss = MultiScaleMelLoss(16000, 6, 9, n_mels=20)
    x = torch.randn(2, 1, 4000) * 0.1
    assert float(loss(x, x)) == 0.0
    small, large = loss(x, x + 0.01 * torch.randn_like(x)), loss(x, x + 0.1 * torch.randn_like(x))
    assert 0 < float(small) < float(large)
    y = (x + 0.05 * torch.randn_like(x)).requires_grad_(True)
    loss(x, y).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_sisnr_loss_is_negated_metric() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 1, 2000)
    y = 0.8 * x + 0.3 * torch.randn_like(x)
    assert float(sisnr_loss(x, y)) == pytest.approx(-float(si_snr(x, y).mean()), abs=1e-3)


def test_adversarial_losses_on_known_logits() -> None:
    fake = [torch.tensor([[-2.0, 0.5]]), torch.tensor([[1.5]])]
    real = [torch.tensor([[0.5, 2.0]]), torch.tensor([[-1.0]])]
    # hinge discriminator: mean(relu(1 + fake)) + mean(relu(1 - real)), averaged over discriminators
    d0 = (0.0 + 1.5) / 2 + (0.5 + 0.0) / 2
    d1 = 2.5 + 2.0
    assert float(discriminator_loss(fake, real)) == pytest.approx((d0 + d1) / 2)
    assert float(generator_adversarial_loss(fake, "hinge")) == pytest.approx(((2.0 - 0.5) / 2 + -1.5) / 2)
    assert float(generator_adversarial_loss(fake, "hinge2")) == pytest.approx(((3.0 + 0.5) / 2 + 0.0) / 2)
    with pytest.raises(ValueError, match="adversarial loss"):
        generator_adversarial_loss(fake, "wasserstein")


def test_feature_matching_and_discriminator_shapes() -> None:
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(1, filters=4, n_ffts=[128, 64], hop_lengths=[32, 16])
    x = torch.randn(2, 1, 1000)
    with torch.no_grad():
        logits, fmaps = disc(x)
    assert len(logits) == 2 and len(fmaps) == 2 and all(len(f) == 5 for f in fmaps)
    frames = (1000 - 128) // 32 + 1
    assert fmaps[0][0].shape == (2, 4, frames, 65)
    assert float(feature_matching_loss(fmaps, fmaps)) == 0.0
    shifted = [[f + 1.0 for f in maps] for maps in fmaps]
    assert float(feature_matching_loss(shifted, fmaps)) == pytest.approx(1.0)


def test_balancer_gradient_matches_hand_computation() -> None:
    torch.manual_seed(0)
    y = torch.randn(4, 1, 50, requires_grad=True)
    target = torch.randn(4, 1, 50)
    losses = {"a": (y - target).abs().mean(), "b": 100.0 * (y - target).pow(2).mean()}
    balancer = GradientBalancer({"a": 1.0, "b": 3.0}, total_norm=2.0, ema_decay=0.9, per_batch_item=True)
    grad, ratios = balancer.gradient(losses, y)
    expected = torch.zeros_like(y)
    norms = {}
    for name, weight in (("a", 1.0), ("b", 3.0)):
        (g,) = torch.autograd.grad(losses[name], [y], retain_graph=True)
        norms[name] = float(g.reshape(4, -1).norm(dim=1).mean())
        expected += 2.0 * weight / 4.0 * g / norms[name]  # first step: the averaged norm is the norm itself
    torch.testing.assert_close(grad, expected)
    assert ratios["ratio_a"] == pytest.approx(norms["a"] / (norms["a"] + norms["b"]))
    # each loss now supplies its weight's share of the gradient, whatever its scale
    (ga,) = torch.autograd.grad(losses["a"], [y], retain_graph=True)
    share_a = (ga / norms["a"] * 2.0 / 4.0).reshape(4, -1).norm(dim=1).mean()
    assert float(share_a) == pytest.approx(0.5, rel=1e-5)
    # second call: bias-corrected EMA of the two norms
    losses2 = {"a": 2 * (y - target).abs().mean(), "b": 100.0 * (y - target).pow(2).mean()}
    grad2, _ = balancer.gradient(losses2, y)
    avg_a = (0.9 * norms["a"] + 2 * norms["a"]) / (0.9 + 1)
    (g2a,) = torch.autograd.grad(losses2["a"], [y], retain_graph=True)
    (g2b,) = torch.autograd.grad(losses2["b"], [y], retain_graph=True)
    torch.testing.assert_close(grad2, 2.0 / 4.0 * g2a / avg_a + 2.0 * 3.0 / 4.0 * g2b / norms["b"])
    state = balancer.state_dict()
    restored = GradientBalancer({"a": 1.0, "b": 3.0}, total_norm=2.0, ema_decay=0.9)
    restored.load_state_dict(state)
    assert restored.state_dict() == state and math.isclose(restored._ema_count["a"], 1.9)
    with pytest.raises(ValueError, match="expects losses"):
        balancer.gradient({"a": losses["a"]}, y)
