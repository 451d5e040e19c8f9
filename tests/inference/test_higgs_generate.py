"""Speech generation with HiggsAudio v2 (tiny random model + fixture audio tokenizer): the generator against the
model-level loop, voice references at another sample rate, defaults from generation_config.json and a run, and
`tunesmith generate` (text, --reference, prompts files, bad lines, resume)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from support.tts import make_higgs_dir
from tunesmith.errors import UserError
from tunesmith.inference.higgs import HiggsGenerator, is_higgs_model, load_reference, speech_defaults
from tunesmith.inference.request import parse_item
from tunesmith.models.higgs.generation import (
    SamplingSettings,
    frames_to_codes,
    generate_audio_frames,
    row_generators,
)
from tunesmith.models.higgs.prompt import SpeechExample

pytestmark = pytest.mark.usefixtures("one_thread")
RATE = 24000


@pytest.fixture(scope="module")
def higgs_dir(tmp_path_factory):
    return make_higgs_dir(tmp_path_factory.mktemp("higgs") / "model")


@pytest.fixture(scope="module")
def generator(higgs_dir):
    return HiggsGenerator.from_path(higgs_dir, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 16 kHz stereo clip: mixed to mono and resampled to 24 kHz before encoding."""
    path = tmp_path_factory.mktemp("ref") / "ref16k.wav"
    t = np.arange(8000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    sf.write(path, np.stack([tone, 0.5 * tone], axis=1).astype(np.float32), 16000)
    return path


def test_generator_equals_the_model_loop_with_a_resampled_reference(generator, reference):
    from tunesmith.audio.io import load_audio

    item = parse_item(
        {
            "text": "Hello there.",
            "reference": str(reference),
            "reference_text": "She sells.",
            "seed": 3,
            "duration": 0.5,
            "temperature": 0.9,
            "top_k": 20,
        },  # fmt: skip
    )
    result = generator.generate([item])[0]
    wav24, _ = load_audio(reference, RATE, 1)  # tunesmith.audio: mono mix, 16 → 24 kHz
    ref_codes = generator.codec.encode(torch.from_numpy(wav24)[None])[0]
    assert torch.equal(generator.reference_codes(reference), ref_codes)
    builder = generator.builder
    batch = builder.collate(
        [builder.encode(SpeechExample("Hello there.", reference_text="She sells.", reference_codes=ref_codes))]
    )
    frames = generate_audio_frames(
        generator.model, batch, generator.max_frames(item), SamplingSettings(0.9, 20), row_generators([3])
    )
    codes = frames_to_codes(frames[0], 32, 33)
    assert np.array_equal(result.codes, codes.numpy())
    assert result.sample_rate == RATE and result.wav.dtype == np.float32 and result.wav.shape[0] == 1
    assert result.wav.shape[1] == codes.shape[1] * 960
    assert result.stats["frames"] == codes.shape[1] and result.stats["real_time_factor"] > 0
    again = generator.generate([item])[0]
    assert np.array_equal(again.wav, result.wav)  # same seed, same audio
    other = generator.generate([parse_item({**item.__dict__, "prompt": "Hello there.", "seed": 4})])[0]
    assert not np.array_equal(other.codes, result.codes) or other.codes.size == 0


def test_batches_keep_order_and_each_row_its_own_prompt(generator, reference):
    items = [
        {"prompt": "Hi.", "duration": 0.3},
        {"prompt": "The quick brown fox.", "duration": 0.3, "reference": str(reference), "reference_text": "x y"},
        {"prompt": "Hi.", "duration": 0.2},
    ]
    results = generator.generate(items)
    assert [r.item.prompt for r in results] == ["Hi.", "The quick brown fox.", "Hi."]
    assert [r.stats["batch_size"] for r in results] == [2, 2, 1]
    alone = generator.generate([items[0]])[0]  # greedy: the same codes in a left-padded batch
    assert np.array_equal(alone.codes, results[0].codes)


def test_bad_items_and_references(generator, tmp_path):
    with pytest.raises(UserError, match="needs its transcript"):
        generator.generate([{"prompt": "a", "reference": "x.wav"}])
    with pytest.raises(UserError, match="without a reference clip"):
        generator.generate([{"prompt": "a", "reference_text": "b"}])
    with pytest.raises(UserError, match="empty"):
        generator.generate([{"prompt": "  "}])
    with pytest.raises(UserError, match="no such audio file"):
        generator.generate([{"prompt": "a", "reference": str(tmp_path / "gone.wav"), "reference_text": "b"}])
    with pytest.raises(UserError, match="not a readable audio file"):
        load_reference(b"not audio at all", RATE)
    with pytest.raises(UserError, match="prompt-audio"):
        generator.generate([{"prompt": "a"}], prompt_wavs=[np.zeros((1, 10))])


def test_encoded_references_are_cached_within_a_bound(generator, monkeypatch):
    import tunesmith.inference.higgs as higgs

    monkeypatch.setattr(higgs, "MAX_CACHED_REFERENCES", 2)
    clips = []
    for pitch in (200, 300, 400):
        buffer = io.BytesIO()
        sf.write(buffer, (0.3 * np.sin(np.arange(4800) * pitch / RATE * 6.28)).astype(np.float32), RATE, format="WAV")
        clips.append(buffer.getvalue())
    first = generator.reference_codes(clips[0])
    assert generator.reference_codes(clips[0]) is first  # encoded once
    for clip in clips[1:]:
        generator.reference_codes(clip)
    assert len(generator._references) == 2 and generator.reference_codes(clips[0]) is not first  # evicted, re-encoded
    assert torch.equal(generator.reference_codes(clips[0]), first)


def test_defaults_from_generation_config_and_run(tmp_path, higgs_dir):
    assert speech_defaults(tmp_path, None)[0]["temperature"] == 0.0  # no generation_config.json: greedy
    (tmp_path / "generation_config.json").write_text(
        json.dumps(
            {
                "do_sample": True,
                "temperature": 0.7,
                "top_k": 50,
                "top_p": 1.0,
                "ras_win_len": 7,
                "ras_win_max_num_repeat": 2,
            }
        )  # fmt: skip
    )
    settings, ras, origin = speech_defaults(tmp_path, None)
    assert (settings["temperature"], settings["top_k"], settings["top_p"]) == (0.7, 50, 0.0)
    assert ras == {"ras_win_len": 7, "ras_win_max_num_repeat": 2} and "generation_config.json" in origin
    settings, ras, origin = speech_defaults(tmp_path, {"generate": {"max_seconds": 4.0, "ras_win_len": 0}})
    assert settings["duration"] == 4.0 and ras["ras_win_len"] == 0 and "run's generate" in origin
    assert is_higgs_model(higgs_dir) and not is_higgs_model(tmp_path) and not is_higgs_model(tmp_path / "none")


def _records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_cli_text_reference_prompts_file_and_resume(tmp_path, higgs_dir, reference, capsys, monkeypatch):
    from tunesmith.cli import main

    monkeypatch.chdir(tmp_path)
    base = ["generate", str(higgs_dir), "--duration", "0.4", "--device", "cpu"]
    rc = main([*base, "--text", "Hello there.", "--reference", str(reference), "--reference-text", "She sells.",
               "--out", "one", "--seed", "5", "--temperature", "0.8"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    (record,) = _records(tmp_path / "one")
    assert record["prompt"] == "Hello there." and record["seed"] == 5 and record["temperature"] == 0.8
    assert record["conditions"] == {"reference": str(reference.resolve()), "reference_text": "She sells."}
    data, rate = sf.read(tmp_path / "one" / record["file"])
    assert rate == RATE and len(data) == round(record["audio_seconds"] * RATE)
    assert main([*base, "--text", "Hello there.", "--reference", str(reference), "--reference-text", "She sells.",
                 "--out", "one", "--seed", "5", "--temperature", "0.8"]) == 0  # fmt: skip
    assert "1 already done, 0 to generate" in capsys.readouterr().err
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "anna.wav").write_bytes(reference.read_bytes())
    prompts = tmp_path / "refs" / "p.jsonl"
    prompts.write_text(
        '{"text": "The quick brown fox.", "reference": "anna.wav", "reference_text": "She sells.", "speaker": "anna"}\n'
        '{"text": "Café déjà vu.", "reference": "anna.wav"}\n'
        "Plain text line.\n"
        '{"text": "x", "temperature": -1}\n'
    )
    rc = main([*base, "--prompts", str(prompts), "--out", "many", "--json"])
    stdout, stderr = capsys.readouterr()
    assert rc == 1, stderr
    assert f"{prompts}:2: reference_text: a voice reference needs its transcript" in stderr
    assert f"{prompts}:4: temperature=-1.0" in stderr
    records = {r["line"]: r for r in _records(tmp_path / "many")}
    assert sorted(records) == [1, 3]
    assert records[1]["conditions"]["speaker"] == "anna"
    assert records[1]["conditions"]["reference"] == str((tmp_path / "refs" / "anna.wav").resolve())
    assert json.loads(stdout.strip().splitlines()[-1])["generated"] == 2
    assert main([*base, "--text", "a", "--reference", str(reference), "--out", "x"]) == 2
    assert "--reference and --reference-text go together" in capsys.readouterr().err
    assert main([*base, "--text", "a", "--melody", str(reference), "--out", "x"]) == 2
