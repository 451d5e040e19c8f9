"""Stereo MusicGen interop against transformers: verify, codes, delay pattern, logits, greedy generation, export.

The reference is a tiny random stereo ``MusicgenForConditionalGeneration`` (decoder ``audio_channels=2``,
8 codebooks interleaved even = left / odd = right over a mono 4-codebook EnCodec) saved by transformers
(tests/support/hf_family.py). Tolerances: logits 1e-4 absolute in float32; greedy tokens identical; the
HF → tunesmith → HF round trip bit-exact.
"""

from __future__ import annotations

import json

import pytest
import torch

from support.hf import CARD, SAMPLE_RATE
from support.hf_family import capture_decoded_codes, make_stereo_dir
from tunesmith.inference.lm import Generator
from tunesmith.models.codec import load_codec
from tunesmith.models.codec.stereo import InterleavedStereoCodec
from tunesmith.models.hf.export import export_hf
from tunesmith.models.hf.importer import import_hf
from tunesmith.models.hf.inputs import delay_pattern_targets
from tunesmith.models.hf.verify import verify_hf_dir
from tunesmith.models.lm.generation import generate_codes

TEXTS = ["a calm piano melody", "fast electronic beat with bass"]
K = 8
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    folder = make_stereo_dir(tmp_path_factory.mktemp("hf") / "stereo")
    # as in downloaded MusicGen tokenizers: a padding setting that transformers' processor leaks into audio kwargs
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["pad_to_multiple_of"] = None
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def hf(hf_dir):
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(str(hf_dir)).eval()
    return model, AutoTokenizer.from_pretrained(str(hf_dir))


@pytest.fixture(scope="module")
def imported(hf_dir, tmp_path_factory):
    return import_hf(hf_dir, tmp_path_factory.mktemp("imported") / "model")


@pytest.fixture(scope="module")
def generator(imported):
    return Generator.from_path(imported)


def test_stereo_dir_verifies_and_imports_as_two_channels(hf_dir, imported, generator):
    from tunesmith.cli import main
    from tunesmith.models.export import verify_model_dir

    assert verify_hf_dir(hf_dir) == [] and verify_model_dir(imported) == []
    assert main(["verify", str(hf_dir)]) == 0
    model = json.loads((imported / "config.json").read_text())["config"]["model"]
    assert (model["channels"], model["num_codebooks"]) == (2, K)
    assert generator.model.pattern.delays == [0, 0, 1, 1, 2, 2, 3, 3]
    assert isinstance(generator.codec, InterleavedStereoCodec) and generator.codec.n_q == K


def test_verify_names_stereo_problems(hf_dir, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(hf_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["decoder"]["audio_channels"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    assert any("mono (1) or stereo (2)" in p for p in verify_hf_dir(folder))
    config["decoder"].update(audio_channels=2, num_codebooks=7)
    (folder / "config.json").write_text(json.dumps(config))
    assert any("needs an even number" in p for p in verify_hf_dir(folder))


def test_stereo_codes_equal_transformers(hf_dir, hf):
    model, _ = hf
    codec = load_codec(hf_dir)
    assert isinstance(codec, InterleavedStereoCodec) and codec.channels == 2
    torch.manual_seed(0)
    wav = torch.randn(2, 2, 800) * 0.3
    ours = codec.encode(wav)
    with torch.no_grad():
        kwargs = model._prepare_audio_encoder_kwargs_for_generation(wav, {"bandwidth": 4.0})
    theirs = kwargs["decoder_input_ids"].view(2, K, -1)
    assert ours.shape == (2, K, 20) and torch.equal(ours, theirs)
    # a random tiny EnCodec maps most audio to the same codes: check the layout on decoding random codes
    codes = torch.randint(0, CARD, (2, K, 20))
    audio = codec.decode(codes)
    assert audio.shape == (2, 2, 800)
    with torch.no_grad():
        left = model.audio_encoder.decode(codes[None, :, 0::2], [None]).audio_values
        right = model.audio_encoder.decode(codes[None, :, 1::2], [None]).audio_values
    assert torch.equal(audio[:, :1], left) and torch.equal(audio[:, 1:], right)
    assert not torch.equal(left, right)


def test_stereo_delay_pattern_equals_transformers(hf):
    model, _ = hf
    frames = torch.randint(0, CARD, (2, K, 7))
    targets = delay_pattern_targets(frames, CARD, channels=2)
    prompt = torch.cat([torch.full((2, K, 1), CARD), frames], dim=2)
    _, mask = model.decoder.build_delay_pattern_mask(prompt.reshape(-1, 8), pad_token_id=CARD, max_length=7 + 4)
    mask = mask.view(2, K, -1)
    assert torch.equal(targets.inputs, mask[:, :, :-1])
    labels = targets.labels.transpose(1, 2)
    assert torch.equal(labels.masked_fill(labels == -100, CARD), mask[:, :, 1:])


def test_stereo_logits_match_transformers(generator, hf):
    model, tokenizer = hf
    lm = generator.model
    frames = torch.randint(0, CARD, (2, K, 10))
    inputs = lm.pattern.model_input(lm.pattern.build(frames, lm.special), lm.special)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = lm(inputs, [{"description": t} for t in TEXTS])
        theirs = model(**enc, decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits
    theirs = theirs.view(2, K, *theirs.shape[1:])
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < LOGIT_ATOL


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_stereo_greedy_generation_matches_transformers(generator, hf, guidance):
    model, tokenizer = hf
    frames = 12
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    theirs = capture_decoded_codes(
        model,
        lambda: model.generate(
            **enc, do_sample=False, guidance_scale=guidance if guidance > 1 else None, max_new_tokens=frames + 3
        ),
    )
    conditions = [{"description": t} for t in TEXTS]
    ours = generate_codes(generator.model, conditions, frames, cfg_coef=guidance, temperature=0.0)
    assert ours.shape == theirs.shape == (2, K, frames)
    assert torch.equal(ours, theirs)


def test_stereo_generation_writes_two_channels(generator, tmp_path):
    from tunesmith.audio.io import load_audio, save_audio

    result = generator.generate([{"prompt": TEXTS[0], "duration": 0.05, "seed": 1}])[0]
    assert result.wav.shape == (2, 400) and result.codes.shape == (K, 10)
    path = tmp_path / "out.wav"
    save_audio(path, result.wav, SAMPLE_RATE)
    wav, rate = load_audio(path)
    assert rate == SAMPLE_RATE and wav.shape[0] == 2


def test_stereo_round_trip_is_bit_exact(imported, hf, tmp_path):
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    model, _ = hf
    exported = export_hf(imported, tmp_path / "exported")
    assert verify_hf_dir(exported) == []
    config = json.loads((exported / "config.json").read_text())
    assert (config["decoder"]["audio_channels"], config["decoder"]["num_codebooks"]) == (2, K)
    reloaded = MusicgenForConditionalGeneration.from_pretrained(str(exported)).eval()
    theirs, ours = model.state_dict(), reloaded.state_dict()
    assert set(theirs) == set(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    processor = AutoProcessor.from_pretrained(str(exported))
    stereo = torch.randn(2, 800).numpy() * 0.3
    enc = processor(audio=[stereo], text=TEXTS[:1], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    assert enc["input_values"].shape == (1, 2, 800)
    with torch.no_grad():
        audio = reloaded.generate(**enc, do_sample=False, max_new_tokens=6)
    assert audio.shape[:2] == (1, 2)


def test_seed_reloaded_processor_leaks_pad_to_multiple_of(hf_dir):
    """Seed: the source's own processor fails on audio ("unexpected keyword argument 'pad_to_multiple_of'")."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(hf_dir))
    with pytest.raises(TypeError, match="pad_to_multiple_of"):
        processor(audio=[torch.zeros(2, 800).numpy()], text=TEXTS[:1], sampling_rate=SAMPLE_RATE, return_tensors="pt")


def test_a_melody_for_a_model_without_melody_conditioning_is_refused(generator, tmp_path):
    from tunesmith.errors import UserError

    with pytest.raises(UserError, match="not melody-conditioned"):
        generator.generate([{"prompt": TEXTS[0], "duration": 0.05, "melody": str(tmp_path / "m.wav")}])
