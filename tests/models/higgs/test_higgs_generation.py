"""tunesmith's greedy HiggsAudio v2 generation against transformers' ``generate(do_sample=False)`` (tiny random
model), with and without a voice reference, single and left-padded batch, and the frames → codes → audio
path against the processor's ``batch_decode``."""

from __future__ import annotations

import pytest
import torch

from support.higgs import STREAM_BOS, STREAM_EOS, TOKENIZER_DIR, make_processor, make_text_tokenizer, save_tiny_lm
from tunesmith.errors import UserError
from tunesmith.models.higgs.generation import frames_to_codes, greedy_audio_frames
from tunesmith.models.higgs.prompt import HiggsPromptBuilder, HiggsTokens, SpeechExample
from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
TOKENS = HiggsTokens(num_codebooks=4, stream_bos_id=STREAM_BOS, stream_eos_id=STREAM_EOS)
MAX_FRAMES = 20
EOS_ROW = STREAM_EOS  # codebook 0's stream-EOS logit row in audio_lm_head


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import HiggsAudioV2ForConditionalGeneration

    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(save_tiny_lm(tmp_path_factory.mktemp("lm"))).eval()
    codec = load_higgs_tokenizer(TOKENIZER_DIR)
    tokenizer = make_text_tokenizer()
    ref = codec.encode(0.3 * torch.randn(1, 1, 3000, generator=torch.Generator().manual_seed(1)))[0]
    return model, codec, tokenizer, HiggsPromptBuilder(tokenizer, TOKENS), ref


def transformers_frames(model, batch):
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    if batch["audio_input_ids"].shape[1]:
        kwargs.update(audio_input_ids=batch["audio_input_ids"], audio_input_ids_mask=batch["audio_input_ids_mask"])
    with torch.no_grad():
        out = model.generate(**kwargs, max_new_tokens=MAX_FRAMES, do_sample=False)
    return out, out[:, batch["audio_input_ids"].shape[1] :]


@pytest.fixture
def eos_scale(setup, request):
    """Scale codebook 0's EOS logit row so generation ends early (2.0) or runs to the limit (1.0)."""
    model = setup[0]
    weight = model.audio_lm_head.weight.data
    saved = weight[EOS_ROW].clone()
    weight[EOS_ROW] = saved * request.param
    yield request.param
    weight[EOS_ROW] = saved


@pytest.mark.parametrize("eos_scale", [1.0, 2.0], indirect=True)
@pytest.mark.parametrize("with_reference", [False, True])
def test_greedy_frames_equal_transformers_generate(setup, eos_scale, with_reference):
    model, codec, tokenizer, builder, ref = setup
    example = SpeechExample("Hello there.")
    if with_reference:
        example = SpeechExample("Hello there.", reference_text="She sells.", reference_codes=ref)
    batch = builder.collate([builder.encode(example)])
    ours = greedy_audio_frames(model, batch, MAX_FRAMES)
    full, theirs = transformers_frames(model, batch)
    assert torch.equal(ours, theirs)
    assert bool((ours[0, 0] == STREAM_BOS).all())
    ended = bool((ours[0, -1] == STREAM_EOS).all())
    if eos_scale == 2.0:
        assert ended and ours.shape[1] < MAX_FRAMES  # the end-of-stream delay path was exercised
    # frames → codes → audio equals the processor's batch_decode of transformers' output
    processor = make_processor(tokenizer, codec)
    codes = frames_to_codes(ours[0], STREAM_BOS, STREAM_EOS)
    if codes.shape[1]:
        expected = processor.batch_decode(full)[0]
        assert torch.allclose(codec.decode(codes[None])[0, 0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("eos_scale", [1.5], indirect=True)
def test_left_padded_batch_equals_transformers_generate(setup, eos_scale):
    model, _, _, builder, ref = setup
    examples = [
        SpeechExample("Hello there, a longer sentence here."),
        SpeechExample("Hi.", reference_text="She sells.", reference_codes=ref),
    ]
    batch = builder.collate([builder.encode(ex) for ex in examples])
    ours = greedy_audio_frames(model, batch, MAX_FRAMES)
    _, theirs = transformers_frames(model, batch)
    assert torch.equal(ours, theirs[:, : ours.shape[1]])
    assert bool((ours[1, -1] == STREAM_EOS).all()) and not bool((ours[0, -1] == STREAM_EOS).all())


def test_prompts_and_frames_are_checked(setup):
    model, _, _, builder, _ = setup
    training = builder.collate([builder.encode(SpeechExample("x", codes=torch.zeros(4, 3, dtype=torch.long)))])
    with pytest.raises(UserError, match="must end with <\\|audio_out_bos\\|>"):
        greedy_audio_frames(model, training, 4)
    with pytest.raises(UserError, match="all-BOS frame"):
        frames_to_codes(torch.zeros(5, 4, dtype=torch.long), STREAM_BOS, STREAM_EOS)
    short = torch.full((3, 4), STREAM_BOS)
    assert frames_to_codes(short, STREAM_BOS, STREAM_EOS).shape == (4, 0)
