"""Hugging Face MusicGen interop against transformers itself: verify, import, parity, export, codec, inputs.

The reference is a tiny random ``MusicgenForConditionalGeneration`` saved by transformers (see
tests/support/hf.py). Tolerances: logits agree to 1e-4 absolute in float32 (logits have std ≈ 2);
greedy generation gives identical tokens; a transformers → tunesmith → transformers round trip is
bit-exact.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from support.hf import BANDWIDTHS, CARD, FRAME_RATE, NUM_CODEBOOKS, SAMPLE_RATE, load_hf, make_musicgen_dir
from tunesmith.errors import UserError
from tunesmith.inference.lm import Generator
from tunesmith.models.codec import load_codec
from tunesmith.models.export import verify_model_dir
from tunesmith.models.hf.encodec import HFEncodecCodec
from tunesmith.models.hf.export import export_hf
from tunesmith.models.hf.finetune import verify_imported_dir
from tunesmith.models.hf.importer import import_hf
from tunesmith.models.hf.inputs import (
    IGNORE_INDEX,
    check_hf_batch,
    delay_pattern_targets,
    encode_audio,
    hf_training_batch,
    tokenize_texts,
)
from tunesmith.models.hf.verify import verify_hf_dir
from tunesmith.models.lm.generation import generate_codes

TEXTS = ["a calm piano melody", "fast electronic beat with bass"]
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_musicgen_dir(tmp_path_factory.mktemp("hf") / "musicgen")


@pytest.fixture(scope="module")
def hf(hf_dir):
    return load_hf(hf_dir)


@pytest.fixture(scope="module")
def imported(hf_dir, tmp_path_factory):
    return import_hf(hf_dir, tmp_path_factory.mktemp("imported") / "model")


@pytest.fixture(scope="module")
def lm(imported):
    return Generator.from_path(imported).model


def _pattern_input(lm, frames):
    return lm.pattern.model_input(lm.pattern.build(frames, lm.special), lm.special)


def _hf_logits(model, tokenizer, texts, decoder_inputs, null_rows=()):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    for row in null_rows:  # transformers' null condition: zero text states, nothing attended
        enc["attention_mask"][row] = 0
    with torch.no_grad():
        logits = model(**enc, decoder_input_ids=decoder_inputs.reshape(-1, decoder_inputs.shape[-1])).logits
    return logits.view(decoder_inputs.shape[0], NUM_CODEBOOKS, *logits.shape[1:])


# --------------------------------------------------------------------------- verify


def test_a_saved_musicgen_verifies(hf_dir):
    assert verify_hf_dir(hf_dir) == []
    assert verify_model_dir(hf_dir) == []  # `tunesmith verify` delegates musicgen directories here


def _broken_copy(hf_dir, tmp_path, edit_config=None):
    folder = tmp_path / "copy"
    shutil.copytree(hf_dir, folder)
    if edit_config is not None:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("model_type"), "config.json has no model_type"),
        (lambda c: c.pop("decoder"), "decoder sub-config missing"),
        (lambda c: c.pop("text_encoder"), "text_encoder sub-config missing"),
        (lambda c: c.update(model_type="musicgen_melody"), "num_chroma=None: expected a positive integer"),
        (lambda c: c.update(model_type="bert"), "is not a MusicGen or EnCodec model"),
        (lambda c: c["decoder"].update(audio_channels=3), "a MusicGen is mono (1) or stereo (2)"),
        (lambda c: c["decoder"].update(pad_token_id=2048), "decoder.pad_token_id=2048 must equal"),
        (lambda c: c["decoder"].update(num_hidden_layers=3), "weights lack decoder.model.decoder.layers.2"),
        (lambda c: c["decoder"].update(ffn_dim=64), "config.json needs [64, 48]"),
        (lambda c: c["audio_encoder"].update(codebook_size=64), "audio_encoder.codebook_size=64 differs"),
        (lambda c: c["audio_encoder"].update(target_bandwidths=[1.0]), "no target bandwidth gives the decoder's 4"),
    ],
)
def test_verify_names_what_is_wrong_with_the_config(hf_dir, tmp_path, edit, message):
    problems = verify_hf_dir(_broken_copy(hf_dir, tmp_path, edit))
    assert any(message in p for p in problems), problems


def test_verify_finds_damaged_weights(hf_dir, tmp_path):
    folder = _broken_copy(hf_dir, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    assert any("model.safetensors" in p and "truncated" in p for p in verify_hf_dir(folder))
    weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    assert any("pickled weights" in p for p in verify_hf_dir(folder))
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()
    assert any("no T5 tokenizer files" in p for p in verify_hf_dir(folder))


def test_verify_checks_the_manifest_of_an_exported_dir(imported, tmp_path):
    exported = export_hf(imported, tmp_path / "exported")
    assert verify_hf_dir(exported) == []
    weights = exported / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    assert any("model.safetensors checksum mismatch" in p for p in verify_hf_dir(exported))


def test_verify_command_prints_the_problems(hf_dir, tmp_path, capsys):
    from tunesmith.cli import main

    folder = _broken_copy(hf_dir, tmp_path, lambda c: c.pop("decoder"))
    assert main(["verify", str(folder)]) == 1
    assert "decoder sub-config missing" in capsys.readouterr().out
    assert main(["verify", str(hf_dir)]) == 0


def test_loading_a_broken_dir_raises_the_problems(hf_dir, tmp_path):
    folder = _broken_copy(hf_dir, tmp_path, lambda c: c.pop("model_type"))
    with pytest.raises(UserError, match="config.json has no model_type"):
        import_hf(folder, tmp_path / "out")
    with pytest.raises(UserError, match="has no model_type|not a|no codec"):
        load_codec(folder)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- import and parity


def test_import_writes_a_complete_model_dir(imported):
    assert {p.name for p in imported.iterdir()} >= {"config.json", "model.safetensors", "manifest.json", "t5", "codec"}
    assert verify_model_dir(imported) == []
    assert verify_imported_dir(imported) == []
    config = json.loads((imported / "config.json").read_text())
    assert config["model_type"] == "tunesmith-lm" and config["meta"]["source_format"] == "hf-musicgen"
    model = config["config"]["model"]
    assert (model["card"], model["num_codebooks"], model["transformer"]["dim"]) == (CARD, NUM_CODEBOOKS, 48)
    assert config["config"]["codec_bandwidth"] == BANDWIDTHS[-1]


def test_logits_match_transformers(lm, hf):
    model, tokenizer = hf
    torch.manual_seed(0)
    frames = torch.randint(0, CARD, (2, NUM_CODEBOOKS, 12))
    inputs = _pattern_input(lm, frames)
    with torch.no_grad():
        ours = lm(inputs, [{"description": t} for t in TEXTS])
        unconditional = lm(inputs, [{}, {"description": TEXTS[1]}])
    theirs = _hf_logits(model, tokenizer, TEXTS, inputs)
    theirs_null = _hf_logits(model, tokenizer, TEXTS, inputs, null_rows=(0,))
    assert (ours - theirs).abs().max() < LOGIT_ATOL
    assert (unconditional - theirs_null).abs().max() < LOGIT_ATOL
    assert (ours[0] - unconditional[0]).abs().max() > 0.1  # the text matters: the comparison is not vacuous


def test_logits_match_without_a_text_projection(tmp_path):
    """T5 as wide as the decoder: transformers has no enc_to_dec_proj; tunesmith uses a frozen identity."""
    source = make_musicgen_dir(tmp_path / "musicgen", text_dim=48)
    model, tokenizer = load_hf(source)
    assert not hasattr(model, "enc_to_dec_proj")
    lm = Generator.from_path(import_hf(source, tmp_path / "model")).model
    frames = torch.randint(0, CARD, (2, NUM_CODEBOOKS, 8))
    inputs = _pattern_input(lm, frames)
    with torch.no_grad():
        ours = lm(inputs, [{"description": t} for t in TEXTS])
    assert (ours - _hf_logits(model, tokenizer, TEXTS, inputs)).abs().max() < LOGIT_ATOL


def _hf_greedy_codes(model, tokenizer, frames, guidance):
    captured = []
    decode = model.audio_encoder.decode

    def capture(codes, *args, **kwargs):
        captured.append(codes.clone())
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = capture
    try:
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            model.generate(**enc, do_sample=False, guidance_scale=guidance, max_new_tokens=frames + NUM_CODEBOOKS - 1)
    finally:
        model.audio_encoder.decode = decode
    return captured[0][0]  # [B, K, frames]


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_greedy_generation_matches_transformers(lm, hf, guidance):
    model, tokenizer = hf
    frames = 16
    theirs = _hf_greedy_codes(model, tokenizer, frames, guidance if guidance > 1 else None)
    ours = generate_codes(lm, [{"description": t} for t in TEXTS], frames, cfg_coef=guidance, temperature=0.0)
    assert ours.shape == theirs.shape == (2, NUM_CODEBOOKS, frames)
    assert torch.equal(ours, theirs)


def test_guidance_changes_the_greedy_tokens(lm):
    conditions = [{"description": t} for t in TEXTS]
    plain = generate_codes(lm, conditions, 16, cfg_coef=1.0, temperature=0.0)
    guided = generate_codes(lm, conditions, 16, cfg_coef=3.0, temperature=0.0)
    assert not torch.equal(plain, guided)


# --------------------------------------------------------------------------- export


def test_export_round_trip_loads_in_transformers_with_identical_weights(imported, hf, tmp_path):
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    model, tokenizer = hf
    exported = export_hf(imported, tmp_path / "exported")
    assert {"config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json"} <= {
        p.name for p in exported.iterdir()
    }
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "musicgen" and config["decoder"]["decoder_start_token_id"] == CARD
    reloaded = MusicgenForConditionalGeneration.from_pretrained(str(exported)).eval()
    theirs, ours = model.state_dict(), reloaded.state_dict()
    assert set(theirs) == set(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    processor = AutoProcessor.from_pretrained(str(exported))
    enc = processor(text=TEXTS, padding=True, return_tensors="pt")
    decoder_inputs = torch.randint(0, CARD, (2 * NUM_CODEBOOKS, 6))
    with torch.no_grad():
        a = model(**enc, decoder_input_ids=decoder_inputs).logits
        b = reloaded(**enc, decoder_input_ids=decoder_inputs).logits
    assert torch.equal(a, b)
    assert reloaded.generation_config.decoder_start_token_id == CARD


def test_export_refuses_a_codec_transformers_cannot_load(imported, tmp_path):
    from support.lm import make_codec_dir

    folder = tmp_path / "model"
    shutil.copytree(imported, folder)
    shutil.rmtree(folder / "codec")
    config = json.loads((folder / "config.json").read_text())
    config["config"].update(codec=str(make_codec_dir(tmp_path)), codec_bandwidth=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    from tunesmith.artifacts.checkpoint import write_manifest

    write_manifest(folder)
    with pytest.raises(UserError, match="needs a transformers EnCodec"):
        export_hf(folder, tmp_path / "exported")


# --------------------------------------------------------------------------- codec


def test_codec_from_a_musicgen_dir_matches_transformers_encodec(hf_dir, hf):
    codec = load_codec(hf_dir)
    assert isinstance(codec, HFEncodecCodec)
    assert (codec.sample_rate, codec.frame_rate, codec.bins, codec.n_q) == (SAMPLE_RATE, FRAME_RATE, CARD, 4)
    assert codec.supported_bandwidths == BANDWIDTHS
    wav = torch.randn(2, 1, 800) * 0.3
    codes = codec.encode(wav)
    with torch.no_grad():
        reference = hf[0].audio_encoder.encode(wav, bandwidth=4.0).audio_codes[0]
    assert codes.dtype == torch.long and torch.equal(codes, reference)
    assert codec.decode(codes).shape == (2, 1, 800)
    codec.set_bandwidth(2.0)
    assert codec.n_q == 2 and codec.encode(wav).shape == (2, 2, 20)


def test_seed_unsupported_bandwidth_lists_the_valid_ones(hf_dir):
    """Seed: "This model doesn't support the bandwidth 6.0"."""
    with pytest.raises(UserError, match=r"bandwidth 6.0 kbps is not supported.*valid bandwidths: \[2.0, 4.0\]"):
        load_codec(hf_dir, bandwidth=6.0)
    codec = load_codec(hf_dir)
    with pytest.raises(UserError, match=r"valid bandwidths: \[2.0, 4.0\]"):
        codec.set_bandwidth(6.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_seed_half_precision_codec_takes_float32_audio(hf_dir, dtype):
    """Seed: "Input type (float) and bias type (c10::Half) should be the same"."""
    codec = load_codec(hf_dir).to(dtype)
    wav = torch.randn(1, 1, 200) * 0.3
    with pytest.raises(RuntimeError, match="Input type"):  # what transformers alone does
        codec.model.encode(wav, bandwidth=4.0)
    assert encode_audio(codec, wav, SAMPLE_RATE).shape == (1, NUM_CODEBOOKS, 5)
    assert codec.encode(wav).dtype == torch.long


def test_codec_rejects_swapped_inputs(hf_dir):
    codec = load_codec(hf_dir)
    with pytest.raises(UserError, match="expects integer codes"):
        codec.decode(torch.randn(1, 4, 10))
    with pytest.raises(UserError, match="float waveform"):
        codec.encode(torch.zeros(1, 1, 100, dtype=torch.int16))
    with pytest.raises(UserError, match="the codec works at 8000 Hz"):
        encode_audio(codec, torch.zeros(1, 1, 100), sample_rate=32000)


# --------------------------------------------------------------------------- training inputs


def test_delay_pattern_targets_match_transformers_pattern_mask(hf):
    """transformers' build_delay_pattern_mask is the independent reference for the pattern."""
    model, _ = hf
    frames = torch.randint(0, CARD, (2, NUM_CODEBOOKS, 7))
    targets = delay_pattern_targets(frames, CARD)
    prompt = torch.cat([torch.full((2, NUM_CODEBOOKS, 1), CARD), frames], dim=2)  # start token + frames
    _, mask = model.decoder.build_delay_pattern_mask(
        prompt.reshape(-1, 8), pad_token_id=CARD, max_length=7 + NUM_CODEBOOKS
    )
    mask = mask.view(2, NUM_CODEBOOKS, -1)  # [start, sequence...], every position given
    assert torch.equal(targets.inputs, mask[:, :, :-1])
    labels = targets.labels.transpose(1, 2)
    assert torch.equal(labels.masked_fill(labels == IGNORE_INDEX, CARD), mask[:, :, 1:])
    assert targets.num_targets == frames.numel()


def test_training_loss_equals_transformers_loss(lm, hf):
    """Codes → labels → transformers' own loss equals tunesmith's, with padding and a null-text row."""
    model, tokenizer = hf
    torch.manual_seed(1)
    frames = torch.randint(0, CARD, (3, NUM_CODEBOOKS, 12))
    lengths = torch.tensor([12, 7, 12])
    texts = [TEXTS[0], None, TEXTS[1]]
    batch = hf_training_batch(frames, texts, tokenizer, CARD, lengths)
    check_hf_batch(batch, NUM_CODEBOOKS)
    assert "decoder_input_ids" not in batch
    with torch.no_grad():
        theirs = model(**batch).loss
        conditions = [{"description": t} if t else {} for t in texts]
        loss_sum, _, counts = lm(frames, conditions, lengths=lengths, return_loss=True)
    assert abs(float(theirs) - float(loss_sum / counts.sum())) < 1e-5
    assert int(counts.sum()) == int((batch["labels"] != IGNORE_INDEX).sum())


def test_seed_unconditional_rows_still_feed_t5(hf):
    """Seed: "You have to specify either input_ids or inputs_embeds" (unconditional rows without text)."""
    model, tokenizer = hf
    tokens = tokenize_texts(tokenizer, [None, "", TEXTS[0]])
    assert tokens["input_ids"].shape[0] == 3
    assert tokens["attention_mask"][:2].sum() == 0 and tokens["attention_mask"][2].sum() > 0
    labels = delay_pattern_targets(torch.randint(0, CARD, (1, NUM_CODEBOOKS, 5)), CARD).labels
    with pytest.raises(ValueError, match="input_ids"):  # what transformers alone does
        model(labels=labels)
    with pytest.raises(UserError, match="no text input_ids"):
        check_hf_batch({"labels": labels})


def test_seed_float_waveform_as_labels_gets_a_clear_message(hf):
    """Seed: float waveforms passed as labels ("Expected ... Long ... got FloatTensor")."""
    _, tokenizer = hf
    wav = torch.randn(2, 1, 800)
    with pytest.raises(UserError, match="integer codec codes.*a waveform\\? Encode audio"):
        hf_training_batch(wav, TEXTS, tokenizer, CARD)
    with pytest.raises(UserError, match="must be codec codes \\(Long\\), not audio"):
        check_hf_batch({"input_ids": torch.ones(2, 3, dtype=torch.long), "labels": torch.randn(2, 10, 4)})


def test_seed_label_ids_and_copying_decoder_inputs_are_refused():
    """Seeds: labels vs label_ids; decoder_input_ids set equal to the labels (teaches copying)."""
    ids = torch.ones(1, 3, dtype=torch.long)
    labels = delay_pattern_targets(torch.randint(0, CARD, (1, NUM_CODEBOOKS, 5)), CARD).labels
    with pytest.raises(UserError, match="takes 'labels'"):
        check_hf_batch({"input_ids": ids, "label_ids": labels})
    copying = labels.masked_fill(labels == IGNORE_INDEX, CARD)
    decoder_inputs = copying.transpose(1, 2).reshape(NUM_CODEBOOKS, -1)
    with pytest.raises(UserError, match="learn to copy"):
        check_hf_batch({"input_ids": ids, "labels": copying, "decoder_input_ids": decoder_inputs})
    with pytest.raises(UserError, match="have no -100"):
        check_hf_batch({"input_ids": ids, "labels": copying})


def test_seed_missing_decoder_start_token_id(hf_dir, tmp_path):
    """Seed: "Make sure to set the decoder_start_token_id" — imports fine; the export sets it."""
    from transformers import MusicgenForConditionalGeneration

    folder = _broken_copy(hf_dir, tmp_path, lambda c: c["decoder"].pop("decoder_start_token_id"))
    bare = MusicgenForConditionalGeneration.from_pretrained(str(folder))
    labels = delay_pattern_targets(torch.randint(0, CARD, (1, NUM_CODEBOOKS, 5)), CARD).labels
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises((ValueError, AttributeError), match="decoder_start_token_id"):  # transformers alone
        bare(input_ids=ids, labels=labels)
    exported = export_hf(import_hf(folder, tmp_path / "model"), tmp_path / "exported")
    reloaded = MusicgenForConditionalGeneration.from_pretrained(str(exported))
    assert torch.isfinite(reloaded(input_ids=ids, labels=labels).loss)


def test_sharded_weights_and_legacy_weight_norm_names_load(hf_dir, tmp_path):
    """A sharded checkpoint (index + shards) imports to the same LM; old weight_g/weight_v EnCodec names load."""
    from safetensors.torch import load_file, save_file
    from transformers import MusicgenForConditionalGeneration

    from tunesmith.artifacts.checkpoint import load_tensors

    sharded = tmp_path / "sharded"
    MusicgenForConditionalGeneration.from_pretrained(str(hf_dir)).save_pretrained(sharded, max_shard_size="100KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(hf_dir / name, sharded / name)
    assert (sharded / "model.safetensors.index.json").is_file() and verify_hf_dir(sharded) == []
    a = load_tensors(import_hf(hf_dir, tmp_path / "a") / "model.safetensors")
    b = load_tensors(import_hf(sharded, tmp_path / "b") / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    legacy = _broken_copy(hf_dir, tmp_path / "legacy")
    tensors = load_file(str(legacy / "model.safetensors"))
    renamed = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in tensors.items()
    }
    assert renamed.keys() != tensors.keys()
    save_file(renamed, str(legacy / "model.safetensors"), {"format": "pt"})
    wav = torch.randn(1, 1, 400) * 0.3
    assert torch.equal(load_codec(legacy).encode(wav), load_codec(hf_dir).encode(wav))
