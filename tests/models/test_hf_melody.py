"""MusicGen-melody interop against transformers: verify, import, logits, greedy generation, export round trip.

The reference is a tiny random ``MusicgenMelodyForConditionalGeneration`` (12 chroma bins projected and
prepended to the decoder sequence with the projected T5 states; 20 chroma frames) saved by transformers
(tests/support/hf_family.py). Chroma inputs are one-hot ``[frames, 12]`` as transformers' feature extractor
makes them. Tolerances: logits 1e-4 absolute in float32; greedy tokens identical; round trip bit-exact.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from support.hf import CARD, NUM_CODEBOOKS
from support.hf_family import CHROMA_LENGTH, capture_decoded_codes, make_melody_dir
from tunesmith.inference.lm import Generator
from tunesmith.models.hf.export import export_hf
from tunesmith.models.hf.importer import import_hf
from tunesmith.models.hf.verify import verify_hf_dir
from tunesmith.models.lm.generation import generate_codes

TEXTS = ["a calm piano melody", "fast electronic beat with bass"]
LOGIT_ATOL = 1e-4


def one_hot_chroma(frames: int, seed: int) -> torch.Tensor:
    bins = torch.randint(0, 12, (frames,), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(bins, 12).float()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    folder = make_melody_dir(tmp_path_factory.mktemp("hf") / "melody")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["pad_to_multiple_of"] = None  # as in downloaded MusicGen tokenizers (leaks into audio kwargs)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def hf(hf_dir):
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    model = MusicgenMelodyForConditionalGeneration.from_pretrained(str(hf_dir)).eval()
    return model, AutoTokenizer.from_pretrained(str(hf_dir))


@pytest.fixture(scope="module")
def imported(hf_dir, tmp_path_factory):
    return import_hf(hf_dir, tmp_path_factory.mktemp("imported") / "model")


@pytest.fixture(scope="module")
def lm(imported):
    return Generator.from_path(imported).model


def test_melody_dir_verifies_and_imports_with_a_chroma_prefix(hf_dir, imported, lm):
    from tunesmith.cli import main
    from tunesmith.models.export import verify_model_dir

    assert verify_hf_dir(hf_dir) == [] and verify_model_dir(imported) == []
    assert main(["verify", str(hf_dir)]) == 0
    model = json.loads((imported / "config.json").read_text())["config"]["model"]
    cond = model["conditioner"]
    assert (cond["fuse"], cond["chroma"], cond["chroma_bins"], cond["chroma_length"]) == ("prefix", True, 12, 20)
    assert model["transformer"]["cross_attention"] is False
    assert lm.conditioner.chroma is not None


def test_verify_names_melody_problems(hf_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(hf_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["chroma_length"] = 0
    config["decoder"]["model_type"] = "musicgen_decoder"
    (folder / "config.json").write_text(json.dumps(config))
    problems = verify_hf_dir(folder)
    assert any("chroma_length=0" in p for p in problems), problems
    assert any("expected 'musicgen_melody_decoder'" in p for p in problems), problems


def _inputs(lm, frames):
    return lm.pattern.model_input(lm.pattern.build(frames, lm.special), lm.special)


@pytest.mark.parametrize("chroma_frames", [7, 30])  # shorter than chroma_length (tiled) and longer (cut)
def test_melody_logits_match_transformers(lm, hf, chroma_frames):
    model, tokenizer = hf
    frames = torch.randint(0, CARD, (2, NUM_CODEBOOKS, 10), generator=torch.Generator().manual_seed(0))
    inputs = _inputs(lm, frames)
    chroma = torch.stack([one_hot_chroma(chroma_frames, 1), one_hot_chroma(chroma_frames, 2)])
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    flat = inputs.reshape(-1, inputs.shape[-1])
    with torch.no_grad():
        ours = lm(inputs, [{"description": t, "chroma": c} for t, c in zip(TEXTS, chroma, strict=True)])
        theirs = model(**enc, input_features=chroma, decoder_input_ids=flat).logits
        no_melody = lm(inputs, [{"description": t} for t in TEXTS])
        theirs_no_melody = model(**enc, decoder_input_ids=flat).logits
    prefix = CHROMA_LENGTH + enc["input_ids"].shape[1]
    theirs = theirs.view(2, NUM_CODEBOOKS, -1, CARD)[:, :, prefix:]
    theirs_no_melody = theirs_no_melody.view(2, NUM_CODEBOOKS, -1, CARD)[:, :, prefix:]
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < LOGIT_ATOL
    assert (no_melody - theirs_no_melody).abs().max() < LOGIT_ATOL
    assert (ours - no_melody).abs().max() > 0.1  # the melody matters: the comparison is not vacuous


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_melody_greedy_generation_matches_transformers(lm, hf, guidance):
    model, tokenizer = hf
    frames = 12
    chroma = torch.stack([one_hot_chroma(9, 3), one_hot_chroma(9, 4)])
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    theirs = capture_decoded_codes(
        model,
        lambda: model.generate(
            **enc,
            input_features=chroma,
            do_sample=False,
            guidance_scale=guidance if guidance > 1 else None,
            max_new_tokens=frames + NUM_CODEBOOKS - 1,
        ),
    )
    conditions = [{"description": t, "chroma": c} for t, c in zip(TEXTS, chroma, strict=True)]
    ours = generate_codes(lm, conditions, frames, cfg_coef=guidance, temperature=0.0)
    assert ours.shape == theirs.shape == (2, NUM_CODEBOOKS, frames)
    assert torch.equal(ours, theirs)
    other = [{"description": t, "chroma": one_hot_chroma(9, 9)} for t in TEXTS]
    assert not torch.equal(ours, generate_codes(lm, other, frames, cfg_coef=guidance, temperature=0.0))


def test_melody_round_trip_is_bit_exact(imported, hf, tmp_path):
    from transformers import MusicgenMelodyForConditionalGeneration

    model, _ = hf
    exported = export_hf(imported, tmp_path / "exported")
    assert verify_hf_dir(exported) == []
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "musicgen_melody" and config["chroma_length"] == CHROMA_LENGTH
    reloaded = MusicgenMelodyForConditionalGeneration.from_pretrained(str(exported)).eval()
    theirs, ours = model.state_dict(), reloaded.state_dict()
    assert set(theirs) == set(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    processor = json.loads((exported / "preprocessor_config.json").read_text())
    assert processor["feature_extractor_type"] == "MusicgenMelodyFeatureExtractor"
    assert processor["processor_class"] == "MusicgenMelodyProcessor"
    assert "pad_to_multiple_of" not in json.loads((exported / "tokenizer_config.json").read_text())


# --------------------------------------------------------------------------- melody at inference


def _melody_wav(tmp_path, seconds=2.0):
    from support.melody import melody_signal
    from tunesmith.audio.io import save_audio

    path = tmp_path / "ref.wav"
    save_audio(path, melody_signal(16000, seconds)[None], 16000)
    return path


def test_generator_follows_a_melody_file(imported, tmp_path):
    from tunesmith.audio.chroma import ChromaSettings, melody_chroma

    generator = Generator.from_path(imported)
    wav = _melody_wav(tmp_path)
    item = {"prompt": TEXTS[0], "duration": 0.05, "seed": 3, "temperature": 0.0}
    with_melody = generator.generate([{**item, "melody": str(wav)}])[0]
    without = generator.generate([item])[0]
    chroma = melody_chroma(wav, ChromaSettings())  # the imported model's analysis: MusicGen-melody's defaults
    direct = generate_codes(generator.model, [{"description": TEXTS[0], "chroma": chroma}], 10, temperature=0.0)
    assert with_melody.codes.shape == (NUM_CODEBOOKS, 10)
    assert (with_melody.codes == direct[0].numpy()).all()
    assert not (with_melody.codes == without.codes).all()


def test_generate_command_takes_a_melody(imported, tmp_path, capsys):
    from tunesmith.cli import main

    wav = _melody_wav(tmp_path)
    out = tmp_path / "out"
    args = ["generate", str(imported), "--prompt", TEXTS[0], "--duration", "0.05", "--out", str(out)]
    assert main([*args, "--melody", str(wav)]) == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["conditions"]["melody"] == str(wav.resolve())
    assert main([*args, "--melody", str(tmp_path / "missing.wav")]) == 2


def test_serve_takes_an_uploaded_melody(imported, tmp_path):
    import base64

    from fastapi.testclient import TestClient

    from tunesmith.serve.app import build_app
    from tunesmith.serve.queue import Limits

    generator = Generator.from_path(imported)
    encoded = base64.b64encode(_melody_wav(tmp_path).read_bytes()).decode()
    with TestClient(build_app(generator, Limits())) as client:
        assert client.get("/v1/model").json()["conditioning"]["melody"] is True
        body = {"prompt": TEXTS[0], "duration": 0.05, "seed": 1, "temperature": 0.0}
        ok = client.post("/v1/generate", json={**body, "melody": encoded})
        assert ok.status_code == 200 and ok.headers["content-type"] == "audio/wav"
        plain = client.post("/v1/generate", json=body)
        assert plain.status_code == 200 and plain.content != ok.content
        bad = client.post("/v1/generate", json={**body, "melody": "not base64!"})
        assert bad.status_code == 422 and "melody" in bad.json()["error"]
        junk = client.post("/v1/generate", json={**body, "melody": base64.b64encode(b"junk").decode()})
        assert junk.status_code == 422 and "readable audio" in junk.json()["error"]


def test_stereo_melody_logits_match_transformers(tmp_path):
    """musicgen-stereo-melody: the chroma prefix over 8 interleaved codebooks."""
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    source = make_melody_dir(tmp_path / "stereo_melody", channels=2)
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(str(source)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    generator = Generator.from_path(import_hf(source, tmp_path / "model"))
    lm = generator.model
    assert lm.pattern.delays == [0, 0, 1, 1, 2, 2, 3, 3] and generator.codec.channels == 2
    frames = torch.randint(0, CARD, (2, 8, 6), generator=torch.Generator().manual_seed(0))
    inputs = _inputs(lm, frames)
    chroma = torch.stack([one_hot_chroma(7, 1), one_hot_chroma(7, 2)])
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = lm(inputs, [{"description": t, "chroma": c} for t, c in zip(TEXTS, chroma, strict=True)])
        theirs = model(**enc, input_features=chroma, decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits
    theirs = theirs.view(2, 8, -1, CARD)[:, :, CHROMA_LENGTH + enc["input_ids"].shape[1] :]
    assert (ours - theirs).abs().max() < LOGIT_ATOL
