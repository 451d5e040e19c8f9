"""The LM: causality, KV cache == recomputation, conditioning paths, CFG dropout, save/load, learning."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tunesmith.models.lm import ConditionerConfig, LMConfig, LMModel, build_lm, build_vocabularies, drop_conditions
from tunesmith.models.lm.generation import generate_codes
from tunesmith.models.transformer import TransformerConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread

CONDS = [
    {"description": "a happy rock song with drums", "genre": "rock", "bpm": 128, "key": "E minor"},
    {"description": "slow sad piano", "genre": "classical", "bpm": 64, "instrument": ["piano", "strings"]},
    {"description": "", "genre": "jazz"},
]


def make_model(fuse="cross", text="builtin", attributes=("genre", "bpm", "key", "instrument"), pattern="delay", **kw):
    torch.manual_seed(0)
    cond = ConditionerConfig(text=text, attributes=list(attributes), fuse=fuse, text_layers=1, **kw)
    cfg = LMConfig(
        card=32,
        num_codebooks=3,
        pattern=pattern,
        transformer=TransformerConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=128),
        conditioner=cond,
    )
    model = LMModel(cfg, build_vocabularies(CONDS, cond))
    with torch.no_grad():  # a non-zero null embedding, so the null path is exercised for real
        if model.conditioner is not None:
            model.conditioner.null.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize("fuse", ["cross", "prefix"])
def test_future_codes_never_change_past_logits(fuse):
    model = make_model(fuse)
    codes = torch.randint(0, 33, (3, 3, 16))
    changed = codes.clone()
    changed[:, :, 9:] = torch.randint(0, 33, (3, 3, 7))
    with torch.no_grad():
        a, b = model(codes, CONDS), model(changed, CONDS)
    assert a.shape == (3, 3, 16, 32)
    torch.testing.assert_close(a[:, :, :9], b[:, :, :9])
    assert not torch.allclose(a[:, :, 9:], b[:, :, 9:])


@pytest.mark.parametrize("fuse,text", [("cross", "builtin"), ("prefix", "builtin"), ("cross", "none")])
def test_cached_steps_equal_full_forward(fuse, text):
    model = make_model(fuse, text)
    codes = torch.randint(0, 33, (3, 3, 12))
    with torch.no_grad():
        cond = model.prepare_conditions(CONDS)
        full = model(codes, cond)
        prefix = cond.embeddings.shape[1] if fuse == "prefix" else 0
        cache = model.transformer.make_cache(3, prefix + 12)
        parts = [model(codes[:, :, :5], cond, cache)] + [
            model(codes[:, :, i : i + 1], None, cache) for i in range(5, 12)
        ]
    torch.testing.assert_close(torch.cat(parts, dim=2), full, atol=1e-5, rtol=1e-5)


def _greedy_reference(
    model: LMModel, conditions: list[dict], num_frames: int, cfg_coef: float, prompt: torch.Tensor | None = None
) -> torch.Tensor:
    """Greedy decoding by full recomputation at every step (no cache), CFG as two separate passes;
    ``prompt`` [B, K, P] frames are kept (teacher forcing)."""
    pattern, special = model.pattern, model.special
    frames = torch.full((len(conditions), model.num_codebooks, num_frames), -1, dtype=torch.long)
    if prompt is not None:
        frames[:, :, : prompt.shape[2]] = prompt
    seq = pattern.build(frames, special)
    null = [{}] * len(conditions)
    with torch.no_grad():
        for s in range(seq.shape[2]):
            inp = pattern.model_input(seq, special)[:, :, : s + 1]
            cond = model(inp, conditions)[:, :, -1]
            uncond = model(inp, null)[:, :, -1]
            logits = uncond + cfg_coef * (cond - uncond)
            seq[:, :, s] = torch.where(seq[:, :, s] == -1, logits.argmax(-1), seq[:, :, s])
    return pattern.revert(seq)


@pytest.mark.parametrize("fuse,pattern", [("cross", "delay"), ("prefix", "delay"), ("cross", "parallel")])
def test_generation_with_cache_equals_recomputation(fuse, pattern):
    model = make_model(fuse, pattern=pattern)
    ours = generate_codes(model, CONDS, 10, cfg_coef=3.0, temperature=0.0)
    ref = _greedy_reference(model, CONDS, 10, 3.0)
    assert ours.shape == (3, 3, 10)
    assert torch.equal(ours, ref)


def test_prompted_generation_equals_recomputation():
    model = make_model()
    prompt = torch.randint(0, 32, (3, 3, 4))
    ours = generate_codes(model, CONDS, 9, cfg_coef=2.0, temperature=0.0, prompt_codes=prompt)
    assert torch.equal(ours[:, :, :4], prompt)
    assert torch.equal(ours, _greedy_reference(model, CONDS, 9, 2.0, prompt))


def test_cfg_dropout_is_per_sample_with_the_configured_rate():
    cfg = ConditionerConfig(attributes=["genre", "bpm"], cfg_dropout=0.3, attribute_dropout=0.2)
    gen = torch.Generator().manual_seed(0)
    outcomes = [drop_conditions(CONDS[0], cfg, gen) for _ in range(6000)]
    dropped = sum(o == {} for o in outcomes) / len(outcomes)
    assert abs(dropped - 0.3) < 0.02  # 5 sigma ≈ 0.03
    kept = [o for o in outcomes if o]
    no_genre = sum("genre" not in o for o in kept) / len(kept)
    assert abs(no_genre - 0.2) < 0.025
    assert all(o["description"] == CONDS[0]["description"] for o in kept)
    assert drop_conditions(CONDS[0], cfg, gen, training=False) == CONDS[0]


def test_null_conditions_are_finite_and_train():
    model = make_model().train()
    codes = torch.randint(0, 32, (4, 3, 10))
    conds = [{}, {}, CONDS[0], {"description": "", "genre": None}]
    tensors = model.prepare_conditions(conds)
    assert tensors.mask.any(dim=1).all()  # every row attends to something
    assert tensors.mask[[0, 1, 3], 0].all() and not tensors.mask[2, 0]
    loss_sum, per_codebook, counts = model.loss(codes, conds)
    assert torch.isfinite(loss_sum)
    loss_sum.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.conditioner.null.grad.abs().sum() > 0
    assert counts.tolist() == [40.0] * 3
    with torch.no_grad():  # a null row equals an unconditional row whatever the text encoder says
        a = model(codes[:1], [{}])
        b = model(codes[:1], [{"description": ""}])
    torch.testing.assert_close(a, b)


def test_state_dict_carries_vocabularies():
    model = make_model(attributes=("genre", "bpm"))
    cfg = dataclasses.replace(model.cfg, card=0, num_codebooks=0)  # taken from the weights
    loaded = build_lm(cfg, {k: v.clone() for k, v in model.state_dict().items()}).eval()
    assert loaded.conditioner.text.tokenizer.vocab == model.conditioner.text.tokenizer.vocab
    codes = torch.randint(0, 33, (3, 3, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(codes, CONDS), model(codes, CONDS))
    with pytest.raises(ValueError, match="weights have"):
        build_lm(dataclasses.replace(model.cfg, card=64), model.state_dict())


def test_t5_conditioner_from_local_directory(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = ["<pad>", "</s>", "<unk>", "happy", "rock", "sad", "piano", "song"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(tmp_path)
    t5cfg = T5Config(vocab_size=8, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4, decoder_start_token_id=0)
    T5EncoderModel(t5cfg).save_pretrained(tmp_path)
    model = make_model(text="t5", attributes=(), t5_path=str(tmp_path)).train()
    assert not any(n.startswith("conditioner.text.t5") for n, _ in model.named_parameters())
    assert set(k for k in model.state_dict() if k.startswith("conditioner.text")) == {
        "conditioner.text.proj.weight",
        "conditioner.text.proj.bias",
    }
    tensors = model.prepare_conditions([{"description": "happy rock song"}, {}])
    assert tensors.embeddings.shape[0] == 2 and torch.isfinite(tensors.embeddings).all()
    assert not tensors.mask[1, 1:].any() and tensors.mask[0, 1:].any()
    loss, _, _ = model.loss(torch.randint(0, 32, (2, 3, 6)), [{"description": "happy rock song"}, {}])
    loss.backward()
    assert model.conditioner.text.proj.weight.grad is not None


def test_tiny_model_overfits_and_text_matters():
    """Clips whose codes follow their description: CE falls far below the unigram entropy, and
    the right description gives a lower CE than a shuffled one."""
    torch.manual_seed(0)
    descriptions = ["bright fast melody", "dark slow drone", "noisy busy drums", "calm soft pad"]
    conds = [{"description": d} for d in descriptions]
    gen = torch.Generator().manual_seed(1)
    clips = torch.stack([torch.randint(0, 32, (3, 1), generator=gen).repeat(1, 24) for _ in descriptions])
    clips = (clips + torch.arange(24) % 3) % 32  # each clip: its own notes, cycling; [4, 3, 24]
    counts = torch.bincount(clips.flatten(), minlength=32).float()
    unigram = float(-(counts / counts.sum() * (counts / counts.sum()).clamp_min(1e-12).log()).sum())
    cond = ConditionerConfig(text_layers=1, cfg_dropout=0.0)
    cfg = LMConfig(
        card=32, num_codebooks=3, transformer=TransformerConfig(dim=48, num_layers=2, num_heads=4), conditioner=cond
    )
    model = LMModel(cfg, build_vocabularies(conds, cond)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        loss_sum, _, n = model.loss(clips[:, :, :12], conds)  # the first frames carry no pattern yet
        opt.zero_grad()
        (loss_sum / n.sum()).backward()
        opt.step()
    model.eval()

    def mean_ce(frames: torch.Tensor, conditions: list[dict]) -> float:
        with torch.no_grad():
            total, _, n = model.loss(frames, conditions)
        return float(total / n.sum())

    shuffled_conds = conds[1:] + conds[:1]
    right, shuffled = mean_ce(clips, conds), mean_ce(clips, shuffled_conds)
    assert right < 0.25 * unigram, (right, unigram)
    assert math.isfinite(shuffled) and shuffled > 2 * right, (right, shuffled)
    # the opening frames can only be known from the text (later ones also from the codes before them)
    right_open, shuffled_open = mean_ce(clips[:, :, :2], conds), mean_ce(clips[:, :, :2], shuffled_conds)
    assert right_open < 0.2 and shuffled_open > 1.0, (right_open, shuffled_open)
