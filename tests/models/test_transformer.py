"""The shared transformer against independent references (torch's decoder layer, HF's sinusoids)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunesmith.models.transformer import Transformer, TransformerConfig, sinusoidal_embedding

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread


def _tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=64, **kw)
    return Transformer(cfg).eval()


def test_matches_torch_decoder_layers():
    """bias=True, layernorm, gelu, cross-attention, no positions == nn.TransformerDecoder(norm_first=True)."""
    torch.manual_seed(0)
    d, h, f = 32, 4, 64
    ours = Transformer(
        TransformerConfig(
            dim=d, num_layers=2, num_heads=h, ffn_dim=f, positional="none", cross_attention=True, cross_dim=d, bias=True
        )
    ).eval()
    for p in ours.parameters():  # non-trivial norms and biases too
        nn.init.normal_(p, std=0.2)
    ref_layers = nn.ModuleList(
        nn.TransformerDecoderLayer(d, h, f, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        for _ in range(2)
    ).eval()
    with torch.no_grad():
        for ref, blk in zip(ref_layers, ours.layers, strict=True):
            ref.self_attn.in_proj_weight.copy_(blk.self_attn.qkv.weight)
            ref.self_attn.in_proj_bias.copy_(blk.self_attn.qkv.bias)
            ref.self_attn.out_proj.weight.copy_(blk.self_attn.out.weight)
            ref.self_attn.out_proj.bias.copy_(blk.self_attn.out.bias)
            ref.multihead_attn.in_proj_weight.copy_(torch.cat([blk.cross_attn.q.weight, blk.cross_attn.kv.weight]))
            ref.multihead_attn.in_proj_bias.copy_(torch.cat([blk.cross_attn.q.bias, blk.cross_attn.kv.bias]))
            ref.multihead_attn.out_proj.weight.copy_(blk.cross_attn.out.weight)
            ref.multihead_attn.out_proj.bias.copy_(blk.cross_attn.out.bias)
            for r, o in ((ref.norm1, blk.norm_self), (ref.norm2, blk.norm_cross), (ref.norm3, blk.norm_ffn)):
                r.weight.copy_(o.weight)
                r.bias.copy_(o.bias)
            ref.linear1.weight.copy_(blk.ffn.fc1.weight)
            ref.linear1.bias.copy_(blk.ffn.fc1.bias)
            ref.linear2.weight.copy_(blk.ffn.fc2.weight)
            ref.linear2.bias.copy_(blk.ffn.fc2.bias)
    x = torch.randn(2, 10, d)
    mem = torch.randn(2, 5, d)
    mem_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    causal = nn.Transformer.generate_square_subsequent_mask(10)
    with torch.no_grad():
        y_ref = x
        for ref in ref_layers:
            y_ref = ref(y_ref, mem, tgt_mask=causal, memory_key_padding_mask=~mem_mask)
        y_ref = ours.norm(y_ref)
        y = ours(x, cross=mem, cross_mask=mem_mask)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)


def test_sinusoids_match_hf_musicgen_layout():
    from transformers.models.musicgen.modeling_musicgen import MusicgenSinusoidalPositionalEmbedding

    ref = MusicgenSinusoidalPositionalEmbedding.get_embedding(50, 24)
    torch.testing.assert_close(sinusoidal_embedding(torch.arange(50), 24), ref)


def test_rope_matches_complex_rotation():
    """Rotary positions == multiplying (x_i + i·x_{i+Dh/2}) by exp(i·p·θ_i), computed independently."""
    model = _tiny(positional="rope")
    blk = model.layers[0].self_attn
    x = torch.randn(1, 6, 32)
    seen = {}

    def hook(_mod, _inp, out):
        seen["qkv"] = out

    handle = blk.qkv.register_forward_hook(hook)
    from tunesmith.models.transformer import apply_rope

    with torch.no_grad():
        model(x)
    handle.remove()
    q = seen["qkv"].view(1, 6, 3, 4, 8)[:, :, 0].transpose(1, 2)  # [1, H, T, 8]
    rotated = apply_rope(q, model.rope_cos[:6], model.rope_sin[:6])
    theta = 10000.0 ** (-torch.arange(0, 8, 2).float() / 8)
    angle = torch.arange(6).float()[:, None] * theta[None]
    z = torch.complex(q[..., :4], q[..., 4:]) * torch.polar(torch.ones_like(angle), angle)
    torch.testing.assert_close(rotated, torch.cat([z.real, z.imag], dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positional", ["sinusoidal", "rope", "none"])
def test_causal_future_tokens_never_change_the_past(positional):
    model = _tiny(positional=positional)
    x = torch.randn(2, 12, 32)
    x2 = x.clone()
    x2[:, 7:] = torch.randn(2, 5, 32)
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


@pytest.mark.parametrize(
    "kw",
    [
        {"positional": "sinusoidal", "cross_attention": True, "cross_dim": 16},
        {"positional": "rope", "norm": "rmsnorm", "activation": "swiglu"},
        {"positional": "sinusoidal", "position_offset": 3, "activation": "gelu_tanh", "bias": True},
    ],
)
def test_kv_cache_equals_full_recomputation(kw):
    model = _tiny(**kw)
    x = torch.randn(3, 20, 32)
    cross = torch.randn(3, 5, 16) if kw.get("cross_attention") else None
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5]) if cross is not None else None
    with torch.no_grad():
        full = model(x, cross=cross, cross_mask=mask)
        cache = model.make_cache(3, 32)
        pieces = [model(x[:, :7], cross=cross, cross_mask=mask, cache=cache)]  # prompt, then a chunk, then steps
        pieces.append(model(x[:, 7:10], cache=cache))
        pieces += [model(x[:, i : i + 1], cache=cache) for i in range(10, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_positions_beyond_the_table_are_computed():
    model = _tiny()
    x = torch.randn(1, 80, 32)  # max_seq_len=64
    with torch.no_grad():
        full = model(x)
        cache = model.make_cache(1, 80)
        steps = [model(x[:, :60], cache=cache)] + [model(x[:, i : i + 1], cache=cache) for i in range(60, 80)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_fully_masked_cross_row_is_finite_and_equals_no_cross():
    """A null condition (nothing to attend to) gives no NaN and the same output as no cross-attention."""
    model = _tiny(cross_attention=True)
    x = torch.randn(2, 6, 32)
    cross = torch.randn(2, 4, 32)
    mask = torch.tensor([[False] * 4, [True, False, False, False]])
    with torch.no_grad():
        y = model(x, cross=cross, cross_mask=mask)
        y_none = model(x[:1])
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:1], y_none)
    model.train()
    loss = model(x, cross=cross.requires_grad_(), cross_mask=mask).square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cache_overflow_and_bad_config_raise():
    model = _tiny()
    cache = model.make_cache(1, 4)
    with pytest.raises(ValueError, match="KV cache holds 4"):
        model(torch.randn(1, 5, 32), cache=cache)
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="cross_attention=False"):
        model(torch.randn(1, 2, 32), cross=torch.randn(1, 2, 32))


def test_bf16_autocast_with_cache_runs():
    model = _tiny(positional="rope", cross_attention=True)
    x = torch.randn(2, 4, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.make_cache(2, 8)
        model(x, cross=torch.randn(2, 3, 32), cache=cache)
        y = model(x[:, :1], cache=cache)
    assert torch.isfinite(y.float()).all()
