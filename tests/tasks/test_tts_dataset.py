"""The tts task's dataset (tunesmith.data.datasets.speech_prompts): whole utterances with transcripts, a voice
reference of the same speaker drawn from the item's seed only, items too long for the model left out with a
logged count, and the exact prompt length it predicts without encoding audio."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from support.higgs import NUM_CODEBOOKS, STREAM_BOS, STREAM_EOS, make_text_tokenizer
from support.lm import FakeTokenShards
from tunesmith.data.datasets.speech_prompts import SpeechPrompts, collate_prompts, prompt_tokens
from tunesmith.errors import UserError
from tunesmith.models.higgs.prompt import HiggsPromptBuilder, HiggsTokens, SpeechExample


def random_shards(frames: list[int], infos: list[dict], k: int = NUM_CODEBOOKS) -> FakeTokenShards:
    """The token-cache split interface over random codes [k, frames] (one array per item), with ``infos``."""
    rng = np.random.default_rng(0)
    return FakeTokenShards([rng.integers(0, 32, size=(k, f)).astype(np.int16) for f in frames], infos)


@pytest.fixture(scope="module")
def builder():
    tokens = HiggsTokens(num_codebooks=NUM_CODEBOOKS, stream_bos_id=STREAM_BOS, stream_eos_id=STREAM_EOS)
    return HiggsPromptBuilder(make_text_tokenizer(), tokens)


def speech(n_per_speaker=(3, 3, 1), frames=10):
    infos, lengths = [], []
    for s, n in enumerate(n_per_speaker):
        for c in range(n):
            infos.append({"transcript": f"The quick brown fox {c}.", "extra": {"speaker": f"spk{s}"}})
            lengths.append(frames + c)
    return random_shards(lengths, infos)


def test_prompt_length_is_exact(builder):
    g = torch.Generator().manual_seed(0)
    codes, ref = torch.randint(0, 32, (4, 13), generator=g), torch.randint(0, 32, (4, 7), generator=g)
    plain = builder.encode(SpeechExample("She sells sea shells.", codes=codes))
    assert prompt_tokens(builder, "She sells sea shells.", 13) == len(plain.input_ids)
    cloned = builder.encode(SpeechExample("Hi.", codes=codes, reference_text="Hello there.", reference_codes=ref))
    assert prompt_tokens(builder, "Hi.", 13, ("Hello there.", 7)) == len(cloned.input_ids)


def test_references_are_same_speaker_and_a_function_of_the_seed(builder, caplog):
    shards = speech()
    with caplog.at_level(logging.WARNING, logger="tunesmith.tts"):
        data = SpeechPrompts(shards, builder, reference="same_speaker")
    assert "1 of 7 utterances have no other clip of their speaker" in caplog.text
    torch.manual_seed(123)  # global RNG must not matter
    first = [data[(i, 40 + i)] for i in range(len(data))]
    torch.manual_seed(999)
    again = [data[(i, 40 + i)] for i in range(len(data))]
    picks = set()
    for a, b in zip(first, again, strict=True):
        assert a.text == b.text and torch.equal(a.codes, b.codes)
        assert (a.reference_codes is None) == (b.reference_codes is None)
        if a.reference_codes is not None:
            assert torch.equal(a.reference_codes, b.reference_codes) and a.reference_text == b.reference_text
            ref = next(j for j in range(len(shards)) if np.array_equal(shards.codes(j), a.reference_codes.numpy()))
            assert ref != a.index and shards.info(ref)["extra"]["speaker"] == a.speaker
            picks.add((a.index, ref))
    assert first[-1].reference_codes is None  # spk2 has one clip only
    assert len({data[(0, s)].reference_text for s in range(20)}) == 2  # seeds choose among both other clips
    batch = collate_prompts(builder, first)
    assert batch["input_ids"].shape[0] == len(first) and batch["position_ids"].shape == batch["input_ids"].shape
    assert (batch["position_ids"][batch["attention_mask"].bool()].min()) == 0
    no_ref = SpeechPrompts(shards, builder, reference="none")
    assert all(no_ref[(i, 1)].reference_codes is None for i in range(len(no_ref)))
    half = SpeechPrompts(shards, builder, reference="same_speaker", reference_probability=0.5)
    given = sum(half[(0, s)].reference_codes is not None for s in range(200))
    assert 60 < given < 140


def test_too_long_and_untranscribed_items_are_left_out_with_a_logged_count(builder, caplog):
    infos = [{"transcript": "Short one."}, {"transcript": ""}, {"transcript": "Long one."}, {"description": "x"}]
    shards = random_shards([5, 5, 400, 5], infos)
    limit = prompt_tokens(builder, "Short one.", 5) + 10
    with caplog.at_level(logging.WARNING, logger="tunesmith.tts"):
        data = SpeechPrompts(shards, builder, max_tokens=limit)
    assert data.indices == [0]
    assert "2 (no transcript), 1 (too long for the model) of 4 utterances" in caplog.text
    with pytest.raises(UserError, match="no utterance to train on"):
        SpeechPrompts(random_shards([5], [{"transcript": " "}]), builder)
    with pytest.raises(UserError, match="codebooks"):
        SpeechPrompts(random_shards([5], [{"transcript": "a"}], k=2), builder)
    with pytest.raises(UserError, match="dataset.reference"):
        SpeechPrompts(shards, builder, reference="random")


def test_a_reference_is_only_chosen_when_the_prompt_still_fits(builder):
    infos = [{"transcript": t, "speaker": "a"} for t in ("Hello.", "Hi there.", "Hey you.")]
    shards = random_shards([8, 20, 8], infos)
    room = prompt_tokens(builder, "Hello.", 8, ("Hey you.", 8))  # item 0 fits with item 2 as its reference
    assert prompt_tokens(builder, "Hello.", 8, ("Hi there.", 20)) > room
    data = SpeechPrompts(shards, builder, reference="same_speaker", max_tokens=room)
    assert data.indices == [0, 1, 2]
    assert {data[(0, s)].reference_text for s in range(10)} == {"Hey you."}  # never the long clip
    assert all(data[(1, s)].reference_codes is None for s in range(10))  # the long clip has no room left
    for s in range(10):
        item = data[(0, s)]
        length = len(builder.encode(item.example()).input_ids)
        assert length <= room
