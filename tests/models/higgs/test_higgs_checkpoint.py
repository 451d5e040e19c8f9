"""Reading a HiggsAudio v2 checkpoint folder: the audio tokenizer path resolved relative to the folder
(and logged), the checks a moved or mismatched checkpoint gets, and the loss from a checkpoint end to end."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from support.higgs import TOKENIZER_DIR, processor_config, save_tiny_lm
from tunesmith.errors import UserError
from tunesmith.models.higgs.checkpoint import load_text_tokenizer, prompt_builder, read_higgs_checkpoint
from tunesmith.models.higgs.loss import higgs_loss
from tunesmith.models.higgs.prompt import SpeechExample
from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def moved_checkpoint(tmp_path_factory):
    """A checkpoint saved on another machine (absolute tokenizer path there), with the tokenizer copied inside."""
    ckpt = save_tiny_lm(tmp_path_factory.mktemp("higgs") / "ckpt")
    shutil.copytree(TOKENIZER_DIR, ckpt / "higgs-audio-v2-tokenizer")
    (ckpt / "processor_config.json").write_text(
        json.dumps(processor_config("/home/someone/hf/higgs-audio-v2-tokenizer"))
    )
    return ckpt


def test_absolute_tokenizer_path_resolved_inside_the_moved_checkpoint(moved_checkpoint, caplog):
    with caplog.at_level(logging.INFO, logger="tunesmith.models.higgs.checkpoint"):
        ck = read_higgs_checkpoint(moved_checkpoint)
    assert ck.audio_tokenizer_dir == moved_checkpoint / "higgs-audio-v2-tokenizer"
    assert "/home/someone/hf/higgs-audio-v2-tokenizer" in caplog.text and "inside the checkpoint" in caplog.text
    assert ck.num_codebooks == 4 and ck.tokens.stream_bos_id == 32 and not ck.has_text_head


def test_tokenizer_next_to_the_checkpoint_and_explicit_folder(tmp_path, caplog):
    ckpt = save_tiny_lm(tmp_path / "ckpt")
    shutil.copytree(TOKENIZER_DIR, tmp_path / "higgs-audio-v2-tokenizer")
    (ckpt / "processor_config.json").write_text(json.dumps(processor_config("/gone/higgs-audio-v2-tokenizer")))
    with caplog.at_level(logging.INFO, logger="tunesmith.models.higgs.checkpoint"):
        assert read_higgs_checkpoint(ckpt).audio_tokenizer_dir == tmp_path / "higgs-audio-v2-tokenizer"
    assert "next to the checkpoint" in caplog.text
    assert read_higgs_checkpoint(ckpt, audio_tokenizer=TOKENIZER_DIR).audio_tokenizer_dir == TOKENIZER_DIR
    with pytest.raises(UserError, match="not a HiggsAudio v2 audio tokenizer folder"):
        read_higgs_checkpoint(ckpt, audio_tokenizer=ckpt)


def test_missing_tokenizer_lists_where_it_looked(tmp_path):
    ckpt = save_tiny_lm(tmp_path / "ckpt")
    (ckpt / "processor_config.json").write_text(json.dumps(processor_config("/gone/tok")))
    with pytest.raises(
        UserError, match=r"no HiggsAudio v2 audio tokenizer found \(processor_config.json names '/gone/tok'\)"
    ):
        read_higgs_checkpoint(ckpt)


def test_a_relative_path_never_resolves_to_an_unrelated_sibling(tmp_path):
    """A relative stored path (tunesmith's imports) means "inside this folder": with that folder gone, a sibling
    folder of the same name is someone else's tokenizer, not this checkpoint's."""
    ckpt = save_tiny_lm(tmp_path / "ckpt")
    shutil.copytree(TOKENIZER_DIR, tmp_path / "audio_tokenizer")  # next to the checkpoint, not inside it
    (ckpt / "processor_config.json").write_text(json.dumps(processor_config("audio_tokenizer")))
    with pytest.raises(UserError, match="no HiggsAudio v2 audio tokenizer found"):
        read_higgs_checkpoint(ckpt)
    shutil.copytree(TOKENIZER_DIR, ckpt / "audio_tokenizer")
    assert read_higgs_checkpoint(ckpt).audio_tokenizer_dir == ckpt / "audio_tokenizer"


def test_codebook_count_mismatch_and_foreign_folders(tmp_path):
    ckpt = save_tiny_lm(tmp_path / "ckpt")
    shutil.copytree(TOKENIZER_DIR, ckpt / "audio_tokenizer")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "num_codebooks": 8}))
    with pytest.raises(
        UserError, match="codebook count mismatch — the model has num_codebooks=8, the audio tokenizer .* makes 4"
    ):
        read_higgs_checkpoint(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**config, "audio_stream_bos_id": 20}))
    with pytest.raises(UserError, match="audio ids do not fit"):
        read_higgs_checkpoint(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**config, "model_type": "musicgen"}))
    with pytest.raises(UserError, match="model_type is 'musicgen', expected 'higgs_audio_v2'"):
        read_higgs_checkpoint(ckpt)
    with pytest.raises(UserError, match="model_type is 'higgs_audio_v2_tokenizer'"):
        read_higgs_checkpoint(TOKENIZER_DIR)


def test_loss_from_a_checkpoint_folder_matches_transformers(moved_checkpoint):
    from transformers import HiggsAudioV2ForConditionalGeneration

    ck = read_higgs_checkpoint(moved_checkpoint)
    codec = load_higgs_tokenizer(ck.audio_tokenizer_dir)
    builder = prompt_builder(ck, load_text_tokenizer(ck))
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(ck.directory).eval()
    g = torch.Generator().manual_seed(3)
    wav = 0.2 * torch.randn(2, 1, 4000, generator=g)
    codes = codec.encode(wav)
    batch = builder.collate(
        [
            builder.encode(SpeechExample("She sells sea shells.", codes=codes[0])),
            builder.encode(
                SpeechExample("Hello.", codes=codes[1, :, :3], reference_text="Hi.", reference_codes=codes[0])
            ),
        ]
    )
    with torch.no_grad():
        ours = higgs_loss(model, batch)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask")}
        reference = model(**inputs, audio_labels=batch["audio_labels"]).loss
    assert ours.audio_frames == codes.shape[2] + 3
    np.testing.assert_allclose(ours.transformers_loss().item(), reference.item(), rtol=0, atol=1e-5)
