"""tunesmith's HiggsAudio v2 prompt/labels against transformers' HiggsAudioV2Processor, and the loss against
transformers' HiggsAudioV2ForConditionalGeneration forward (tiny random model, fp32, ≤ 1e-5).

The processor is the real transformers class; only its audio tokenizer (which needs torchaudio) is a
stand-in returning tunesmith's tokenizer codes, itself checked against transformers in
test_higgs_tokenizer.py.
"""

from __future__ import annotations

import unicodedata
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from support.higgs import (
    NUM_CODEBOOKS,
    STREAM_BOS,
    STREAM_EOS,
    TOKENIZER_DIR,
    make_processor,
    make_text_tokenizer,
    save_tiny_lm,
)
from tunesmith.errors import UserError
from tunesmith.models.higgs.loss import higgs_loss
from tunesmith.models.higgs.prompt import (
    IGNORE,
    HiggsPromptBuilder,
    HiggsTokens,
    SpeechExample,
    delay_pattern,
    render_chat,
    revert_delay_pattern,
)
from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
TOKENS = HiggsTokens(num_codebooks=NUM_CODEBOOKS, stream_bos_id=STREAM_BOS, stream_eos_id=STREAM_EOS)


@pytest.fixture(scope="module")
def codec():
    return load_higgs_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def text_tokenizer():
    return make_text_tokenizer()


@pytest.fixture(scope="module")
def clips():
    g = torch.Generator().manual_seed(7)
    return {name: 0.3 * torch.randn(1, 1, n, generator=g) for name, n in (("ref", 2400), ("a", 3000), ("b", 4100))}


@pytest.fixture(scope="module")
def examples(codec, clips):
    code = {name: codec.encode(wav)[0] for name, wav in clips.items()}
    return [
        SpeechExample(
            "The quick brown fox jumps over the lazy dog.",
            codes=code["a"],
            reference_text="She sells sea shells.",
            reference_codes=code["ref"],
            scene="Audio is recorded from a quiet room.",
        ),
        SpeechExample("  It was the night before my birthday. ", codes=code["b"]),
    ]


@pytest.fixture(scope="module")
def processor_batch(text_tokenizer, codec, clips, examples):
    processor = make_processor(text_tokenizer, codec)
    texts = [render_chat(ex, TOKENS) for ex in examples]
    audio = [clips["ref"][0, 0].numpy(), clips["a"][0, 0].numpy(), clips["b"][0, 0].numpy()]
    return processor(text=texts, audio=audio, output_labels=True, return_tensors="pt", add_special_tokens=False)


def test_delay_pattern_matches_the_processor(text_tokenizer, codec):
    from transformers import HiggsAudioV2Processor

    codes = torch.randint(0, 32, (NUM_CODEBOOKS, 6))
    ours = delay_pattern(codes, STREAM_BOS, STREAM_EOS)
    stand_in = SimpleNamespace(audio_stream_bos_id=STREAM_BOS, audio_stream_eos_id=STREAM_EOS)
    with_bos_eos = torch.cat(
        [torch.full((1, NUM_CODEBOOKS, 1), STREAM_BOS), codes[None], torch.full((1, NUM_CODEBOOKS, 1), STREAM_EOS)], 2
    )
    theirs = HiggsAudioV2Processor.build_delay_pattern(stand_in, with_bos_eos)[0]
    assert torch.equal(ours, theirs)
    inner = ours.t()[1:-1]  # stream BOS / EOS frames removed, as the processor's decode does
    assert torch.equal(revert_delay_pattern(inner), HiggsAudioV2Processor.revert_delay_pattern(stand_in, inner))
    assert torch.equal(revert_delay_pattern(inner), codes.t())


@pytest.mark.parametrize("label_reference_audio", [False, True])
def test_batch_matches_the_processor(text_tokenizer, examples, processor_batch, label_reference_audio):
    builder = HiggsPromptBuilder(text_tokenizer, TOKENS, label_reference_audio=label_reference_audio)
    ours = builder.collate([builder.encode(ex) for ex in examples])
    for key in ("input_ids", "attention_mask", "labels", "audio_input_ids", "audio_input_ids_mask"):
        assert torch.equal(ours[key], processor_batch[key].to(ours[key].dtype)), key
    expected = processor_batch["audio_labels"].clone()
    if not label_reference_audio:  # tunesmith: no loss on the voice reference (row 0's first clip)
        n_ref = examples[0].reference_codes.shape[1] + NUM_CODEBOOKS + 1
        expected[0, :n_ref] = IGNORE
    assert torch.equal(ours["audio_labels"], expected)
    # the target clip keeps its labels: exactly its F frames × K codebooks
    n_target = examples[1].codes.numel()
    assert int((ours["audio_labels"][1] != IGNORE).sum()) == n_target


def test_transcripts_are_nfc_normalised(text_tokenizer, examples):
    builder = HiggsPromptBuilder(text_tokenizer, TOKENS)
    text = "Café déjà vu: naïve façades."
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text
    a = builder.encode(SpeechExample(text, codes=examples[1].codes))
    b = builder.encode(SpeechExample(nfd, codes=examples[1].codes))
    assert torch.equal(a.input_ids, b.input_ids)
    assert unicodedata.is_normalized("NFC", a.meta["text"])


def test_generation_prompt_ends_with_audio_bos(text_tokenizer):
    text = render_chat(SpeechExample("Hello."), TOKENS)
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")


def test_generation_prompt_encodes_the_reference_only(text_tokenizer, examples):
    builder = HiggsPromptBuilder(text_tokenizer, TOKENS)
    ref = examples[0].reference_codes
    enc = builder.encode(SpeechExample("Say this.", reference_text="Hi.", reference_codes=ref))
    assert enc.input_ids[-1].item() == builder.audio_bos_token_id
    assert torch.equal(enc.audio_input_ids, delay_pattern(ref, STREAM_BOS, STREAM_EOS).t())
    assert bool((enc.audio_labels == IGNORE).all())


def test_bad_examples_are_user_errors(text_tokenizer, examples):
    builder = HiggsPromptBuilder(text_tokenizer, TOKENS)
    with pytest.raises(UserError, match="below the stream BOS/EOS"):
        builder.encode(SpeechExample("x", codes=torch.full((NUM_CODEBOOKS, 3), STREAM_BOS)))
    with pytest.raises(UserError, match=r"must be \[4 codebooks"):
        builder.encode(SpeechExample("x", codes=torch.zeros(2, 3, dtype=torch.long)))
    with pytest.raises(UserError, match="both its audio codes and its transcript"):
        builder.encode(SpeechExample("x", codes=examples[1].codes, reference_text="y"))
    with pytest.raises(UserError, match="empty transcript"):
        builder.encode(SpeechExample(" \n ", codes=examples[1].codes))
    with pytest.raises(UserError, match="empty voice-reference transcript"):
        builder.encode(
            SpeechExample("x", codes=examples[1].codes, reference_text="", reference_codes=examples[1].codes)
        )
    with pytest.raises(UserError, match="reserved token"):
        builder.encode(SpeechExample("say <|AUDIO_OUT|>", codes=examples[1].codes))


@pytest.mark.parametrize("use_text_head", [False, True])
def test_loss_equals_transformers_forward(tmp_path, text_tokenizer, examples, use_text_head):
    from transformers import HiggsAudioV2ForConditionalGeneration

    model_dir = save_tiny_lm(tmp_path / "lm", use_text_head=use_text_head)
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(model_dir, use_text_head=use_text_head).eval()
    assert (model.text_lm_head is not None) == use_text_head
    builder = HiggsPromptBuilder(text_tokenizer, TOKENS)
    batch = builder.collate([builder.encode(ex) for ex in examples])
    with torch.no_grad():
        ours = higgs_loss(model, batch)
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask")}
        reference = model(
            **kwargs, audio_labels=batch["audio_labels"], labels=batch["labels"] if use_text_head else None
        )
    assert ours.audio_frames == sum(ex.codes.shape[1] for ex in examples)
    assert ours.audio_tokens == ours.audio_frames * NUM_CODEBOOKS
    assert (ours.text_sum is not None) == use_text_head
    np.testing.assert_allclose(ours.transformers_loss().item(), reference.loss.item(), rtol=0, atol=1e-5)
    assert ours.audio_sum.item() > 0


def test_text_loss_without_a_text_head_is_refused(tmp_path, text_tokenizer, examples):
    from transformers import HiggsAudioV2ForConditionalGeneration

    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(save_tiny_lm(tmp_path / "lm")).eval()
    builder = HiggsPromptBuilder(text_tokenizer, TOKENS)
    batch = builder.collate([builder.encode(examples[1])])
    with pytest.raises(UserError, match="use_text_head=True"):
        higgs_loss(model, batch, text_loss=True)
