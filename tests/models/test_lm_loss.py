"""Fused heads + cross-entropy against the plain path (logits materialised, torch's cross_entropy)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunesmith.models.lm.loss import heads_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread


def _reference(h, weight, targets):
    n, (k, card, d) = h.shape[0], weight.shape
    logits = (h @ weight.reshape(-1, d).t()).view(n, k, card)
    ce = F.cross_entropy(logits.reshape(-1, card), targets.reshape(-1), ignore_index=-100, reduction="none")
    ce = ce.view(n, k)
    return ce.sum(), ce.sum(dim=0)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_loss_and_gradients_match_plain_cross_entropy(chunk):
    torch.manual_seed(0)
    h = torch.randn(50, 16, requires_grad=True)
    weight = (torch.randn(3, 40, 16) * 0.3).requires_grad_()
    targets = torch.randint(0, 40, (50, 3))
    targets[:5, 1:] = -100  # pattern padding
    targets[-3:] = -100
    ref_loss, ref_per = _reference(h, weight, targets)
    (ref_loss * 0.5).backward()
    ref_grads = h.grad.clone(), weight.grad.clone()
    h.grad = weight.grad = None
    loss, per = heads_cross_entropy(h, weight, targets, chunk)
    (loss * 0.5).backward()  # the upstream gradient scales both gradients
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(per, ref_per.detach())
    torch.testing.assert_close(h.grad, ref_grads[0])
    torch.testing.assert_close(weight.grad, ref_grads[1])
    assert not per.requires_grad


def test_no_grad_path_and_bf16_autocast():
    torch.manual_seed(1)
    h = torch.randn(30, 8)
    weight = torch.randn(2, 10, 8)
    targets = torch.randint(0, 10, (30, 2))
    with torch.no_grad():
        loss, per = heads_cross_entropy(h, weight, targets, 8)
    ref_loss, ref_per = _reference(h, weight, targets)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(per, ref_per)
    hb = h.clone().requires_grad_()
    wb = weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_b, _ = heads_cross_entropy(hb, wb, targets, 8)
    loss_b.backward()
    assert hb.grad.dtype == torch.float32 and wb.grad.dtype == torch.float32
    torch.testing.assert_close(loss_b, ref_loss, rtol=0.05, atol=0.5)
