"""Codebook patterns: exact round trip, layout and masks, and the sampler's filters."""

from __future__ import annotations

import pytest
import torch

from tunesmith.models.lm.patterns import Pattern
from tunesmith.models.sampling import check_sampling, filter_logits, sample_next

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread


@pytest.mark.parametrize("kind", ["delay", "parallel"])
@pytest.mark.parametrize("k,f", [(1, 5), (4, 1), (4, 17), (8, 3)])
def test_build_revert_round_trip(kind, k, f):
    codes = torch.randint(0, 50, (3, k, f))
    pattern = Pattern(kind, k)
    seq = pattern.build(codes, special=50)
    assert seq.shape == (3, k, f + pattern.max_delay)
    assert torch.equal(pattern.revert(seq), codes)
    valid = pattern.valid_mask(f)
    assert torch.equal(seq[:, ~valid], torch.full_like(seq[:, ~valid], 50))
    assert int(valid.sum()) == k * f
    logits = torch.randn(3, k, seq.shape[2], 7)  # revert keeps trailing dims (per-step logits)
    assert pattern.revert(logits).shape == (3, k, f, 7)


def test_delay_layout_matches_musicgen():
    """Codebook k's frame t sits at step t + k (the layout HF's build_delay_pattern_mask produces)."""
    codes = torch.arange(1, 7).view(1, 2, 3)  # [[1, 2, 3], [4, 5, 6]]
    seq = Pattern("delay", 2).build(codes, special=9)
    assert seq.tolist() == [[[1, 2, 3, 9], [9, 4, 5, 6]]]
    inp = Pattern.model_input(seq, special=9)
    assert inp.tolist() == [[[9, 1, 2, 3], [9, 9, 4, 5]]]


def test_pattern_errors():
    with pytest.raises(ValueError, match="codebooks"):
        Pattern("delay", 4).build(torch.zeros(1, 3, 5, dtype=torch.long), 9)
    with pytest.raises(ValueError, match="pattern"):
        Pattern("diagonal", 4)  # type: ignore[arg-type]


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # nucleus 0.7: 0.5 alone is < 0.7, 0.5 + 0.3 covers it → keep two
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.4)).tolist() == [[False, True, True, True]]
    shuffled = logits[:, [2, 0, 3, 1]]  # the filter follows values, not positions
    assert torch.isinf(filter_logits(shuffled, top_p=0.7)).tolist() == [[True, False, True, False]]


def test_sampling_distribution_and_seeds():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20000, 4)
    gen = torch.Generator().manual_seed(0)
    draws = sample_next(logits, temperature=1.0, generator=gen)
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    top2 = sample_next(logits, top_k=2, generator=gen)
    freq2 = torch.bincount(top2, minlength=4).float() / top2.numel()
    torch.testing.assert_close(freq2, torch.tensor([0.625, 0.375, 0, 0]), atol=0.015, rtol=0)
    assert set(sample_next(logits, top_p=0.7, generator=gen).unique().tolist()) == {0, 1}
    assert torch.equal(sample_next(logits, temperature=0), torch.zeros(20000, dtype=torch.long))
    a = sample_next(logits[:50], generator=torch.Generator().manual_seed(3))
    b = sample_next(logits[:50], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="top_p"):
        check_sampling(1.0, 0, 1.5)
