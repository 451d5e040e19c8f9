"""HiggsAudio v2 sampling and repetition-aware sampling (RAS) against transformers' ``generate`` (tiny random
model, one row, same seed), the lean decode step against transformers' forward, and the RAS rule by hand."""

from __future__ import annotations

import pytest
import torch

from support.higgs import STREAM_BOS, STREAM_EOS, TOKENIZER_DIR, make_text_tokenizer, save_tiny_lm
from tunesmith.errors import UserError
from tunesmith.models.higgs.generation import (
    GREEDY,
    SamplingSettings,
    generate_audio_frames,
    lean_decoder_supported,
    ras_replace,
    row_generators,
    warp_scores,
)
from tunesmith.models.higgs.prompt import HiggsPromptBuilder, HiggsTokens, SpeechExample
from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
TOKENS = HiggsTokens(num_codebooks=4, stream_bos_id=STREAM_BOS, stream_eos_id=STREAM_EOS)
V = STREAM_EOS + 1  # codebook_size of the tiny model
FRAMES = 24
LIKED = 7  # a code made likely in every codebook, so that greedy repeats it and RAS has work


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import HiggsAudioV2ForConditionalGeneration

    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(save_tiny_lm(tmp_path_factory.mktemp("lm"))).eval()
    codec = load_higgs_tokenizer(TOKENIZER_DIR)
    builder = HiggsPromptBuilder(make_text_tokenizer(), TOKENS)
    ref = codec.encode(0.3 * torch.randn(1, 1, 3000, generator=torch.Generator().manual_seed(1)))[0]
    one = builder.collate(
        [builder.encode(SpeechExample("Hello there.", reference_text="She sells.", reference_codes=ref))]
    )
    two = builder.collate(
        [builder.encode(SpeechExample("Hello there, a longer sentence here.")), builder.encode(SpeechExample("Hi."))]
    )
    return model, one, two


@pytest.fixture
def repetitive(setup):
    """Scale codebooks' rows for code LIKED ×4 and the EOS rows ×0 so generation runs long and repeats."""
    weight = setup[0].audio_lm_head.weight.data
    saved = weight.clone()
    for k in range(TOKENS.num_codebooks):
        weight[k * V + LIKED] *= 4.0
        weight[k * V + STREAM_EOS] *= 0.0
    yield
    weight.copy_(saved)


def transformers_generate(model, batch, seed, **config):
    from transformers import GenerationConfig

    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    if batch["audio_input_ids"].shape[1]:
        kwargs.update(audio_input_ids=batch["audio_input_ids"], audio_input_ids_mask=batch["audio_input_ids_mask"])
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**kwargs, generation_config=GenerationConfig(max_new_tokens=FRAMES, **config))
    return out[:, batch["audio_input_ids"].shape[1] :]


def ours(model, batch, settings, seeds=(5,), **kw):
    return generate_audio_frames(model, batch, FRAMES, settings, row_generators(seeds), **kw)


@pytest.mark.parametrize(
    ("settings", "config"),
    [
        (SamplingSettings(0.8, 10, 0.9), dict(do_sample=True, temperature=0.8, top_k=10, top_p=0.9)),
        (SamplingSettings(1.0), dict(do_sample=True, temperature=1.0)),
        (SamplingSettings(ras_win_len=7), dict(do_sample=False, ras_win_len=7, ras_win_max_num_repeat=2)),
        (
            SamplingSettings(0.7, 5, ras_win_len=10, ras_win_max_num_repeat=2),
            dict(do_sample=True, temperature=0.7, top_k=5, ras_win_len=10, ras_win_max_num_repeat=2),
        ),
    ],
)
def test_sampling_and_ras_equal_transformers_generate(setup, repetitive, settings, config):
    model, one, _ = setup
    theirs = transformers_generate(model, one, 5, **config)
    mine = ours(model, one, settings)
    assert torch.equal(mine, theirs)
    if settings.ras_win_len:  # RAS really replaced codes: greedy without it differs
        plain = ours(model, one, SamplingSettings(settings.temperature, settings.top_k))
        assert not torch.equal(plain, mine)


def test_lean_decoder_equals_transformers_forward(setup, repetitive):
    model, one, two = setup
    assert lean_decoder_supported(model)
    for batch in (one, two):  # two: a left-padded batch (masked attention path)
        lean = generate_audio_frames(model, batch, FRAMES, GREEDY, decoder="lean")
        reference = generate_audio_frames(model, batch, FRAMES, GREEDY, decoder="transformers")
        assert torch.equal(lean, reference)
    settings = SamplingSettings(1.0, ras_win_len=5)
    assert torch.equal(ours(model, two, settings, (1, 2), decoder="lean"),
                       ours(model, two, settings, (1, 2), decoder="transformers"))  # fmt: skip


def test_lean_decoder_runs_through_an_unmerged_lora_wrapper(setup, repetitive):
    """The tts task's generate stage passes the training model: a PeftModel whose adapters are not merged."""
    import copy

    from peft import LoraConfig, get_peft_model

    model, one, two = setup
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, param in wrapped.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: make the adapters change the outputs
            torch.nn.init.normal_(param, std=0.5, generator=torch.Generator().manual_seed(len(name)))
    lean = generate_audio_frames(wrapped, two, FRAMES, GREEDY, decoder="lean")
    assert torch.equal(lean, generate_audio_frames(wrapped, two, FRAMES, GREEDY, decoder="transformers"))
    merged = wrapped.merge_and_unload()
    assert torch.equal(lean, generate_audio_frames(merged, two, FRAMES, GREEDY, decoder="transformers"))
    assert not torch.equal(lean, generate_audio_frames(model, two, FRAMES, GREEDY))


def test_sampling_is_reproducible_and_limits_are_greedy(setup):
    model, one, two = setup
    settings = SamplingSettings(1.0, 0, 0.95)
    first = ours(model, two, settings, (3, 4))
    assert torch.equal(first, ours(model, two, settings, (3, 4)))
    assert not torch.equal(first, ours(model, two, settings, (8, 9)))
    greedy = generate_audio_frames(model, two, FRAMES, GREEDY)
    assert not torch.equal(first, greedy)
    assert torch.equal(ours(model, two, SamplingSettings(1e-6), (3, 4)), greedy)  # temperature → 0
    assert torch.equal(ours(model, two, SamplingSettings(1.5, top_k=1), (3, 4)), greedy)  # top-k 1
    steps = []
    generate_audio_frames(model, one, 3, GREEDY, on_step=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_ras_rule_by_hand():
    bos, eos = 8, 9
    # window of 4 frames × 2 codebooks for 2 rows
    window = torch.tensor(
        [
            [[1, 2], [1, bos], [3, 2], [1, 2]],  # row 0: code 1 ×3 in codebook 0, code 2 ×3 in codebook 1
            [[eos, eos], [eos, eos], [5, 4], [6, 4]],  # row 1: EOS fillers never count
        ]
    )
    picked = torch.tensor([[1, 4], [eos, 4]])
    raw = torch.full((2, 2, 10), -1e9)
    raw[..., 0] = 0.0  # the raw-logit draw can only give 0
    out = ras_replace(window, picked.clone(), raw, 3, (bos, eos), [None, None])
    assert out.tolist() == [[0, 4], [eos, 4]]  # row 0 cb 0 repeated 3× ≥ 3 → replaced; cb 1's 4 never seen
    out = ras_replace(window, picked.clone(), raw, 2, (bos, eos), [None, None])
    assert out.tolist() == [[0, 4], [eos, 0]]  # threshold 2: row 1 cb 1 (4 twice) replaced; picked EOS never


def test_warpers_match_transformers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = torch.randn(6, V, generator=torch.Generator().manual_seed(0))
    expected = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(12)(None, TemperatureLogitsWarper(0.7)(None, scores)))
    assert torch.equal(warp_scores(scores, SamplingSettings(0.7, 12, 0.8)), expected)


def test_bad_settings_and_generators(setup):
    model, one, _ = setup
    for bad in (dict(temperature=-1.0), dict(top_k=-1), dict(top_p=1.5), dict(ras_win_len=-1)):
        with pytest.raises(UserError):
            SamplingSettings(**bad)
    with pytest.raises(UserError, match="generators for a batch"):
        generate_audio_frames(model, one, 4, SamplingSettings(1.0), row_generators([1, 2]))
    with pytest.raises(UserError, match="decoder="):
        generate_audio_frames(model, one, 4, GREEDY, decoder="fast")
