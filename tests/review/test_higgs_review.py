"""`tunesmith review` of a tts run (tiny HiggsAudio v2 + tiny multi-speaker speech data, LoRA, 2 epochs, voice
references of the same speaker): fixed texts and speakers × checkpoints, a text and a speaker column on the page,
samples equal to the generator's for the same seed, reuse on a second review, and a --prompts file."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from support.tts import make_higgs_dir, make_speech_data
from tunesmith.cli import main
from tunesmith.data.datasets.speech_prompts import speaker_of, transcript_of

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tts_run(tmp_path_factory):
    import contextlib
    import io

    root = tmp_path_factory.mktemp("tts-review")
    data = make_speech_data(root)
    higgs = make_higgs_dir(root / "higgs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        overrides = [
            f"data={data}",
            f"init_from=hf:{higgs}",
            "dataset.reference=same_speaker",
            "generate.num_samples=0",
        ]
        code = main(["train", "tts", "tiny", *overrides, "train.log.progress=false", "--runs-dir", str(root / "runs"),
                     "--json"])  # fmt: skip
    assert code == 0
    return Path(json.loads(out.getvalue().strip().splitlines()[-1])["run_dir"])


class Table(HTMLParser):
    """The sample grid's header cells and rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.in_grid, self.cell, self.heads, self.rows, self.audio = False, None, [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("class") == "grid":
            self.in_grid = True
        elif self.in_grid and tag == "tr":
            self.rows.append([])
        elif self.in_grid and tag in ("td", "th"):
            self.cell = ""
        elif self.in_grid and tag == "audio":
            self.audio.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_grid = False
        elif self.in_grid and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_tts_review_shows_texts_and_speakers_across_checkpoints(tts_run, capsys):
    assert main(["review", str(tts_run), "--device", "cpu", "--duration", "0.3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "tts" and summary["generated"] > 0
    lines = [json.loads(x) for x in (tts_run / "samples/review/prompts.jsonl").read_text().splitlines()]
    assert len(lines) >= 2 and {line["speaker"] for line in lines} == {"spk0", "spk1"}  # speakers in turn
    for line in lines:  # a voice reference: another clip of the same speaker
        assert Path(line["reference"]).is_file() and line["reference_text"]
        info = json.loads(Path(line["reference"]).with_suffix(".json").read_text())
        assert speaker_of(info) == line["speaker"] and transcript_of(info) == line["reference_text"]
        assert transcript_of(info) != line["text"] or len(lines) == 1
    page = Table()
    page.feed((tts_run / "samples/index.html").read_text())
    head = page.rows[0]
    assert head[:2] == ["text", "speaker"] and any(h.startswith("epoch 1") for h in head)
    assert any(h.startswith("epoch 2") for h in head)
    body = page.rows[1:]
    assert [row[0].split("seed")[0].strip() for row in body] == [line["text"] for line in lines]
    assert all(
        row[1].startswith(line["speaker"]) and "reference" in row[1] for row, line in zip(body, lines, strict=True)
    )
    assert len(page.audio) == len(lines) * (len(head) - 2)
    # a sample equals the generator's for that checkpoint, text, reference and seed
    from tunesmith.inference.higgs import HiggsGenerator

    wav_path = tts_run / "samples" / page.audio[0]
    checkpoint = tts_run / "checkpoints" / wav_path.parent.name
    generator = HiggsGenerator.from_path(checkpoint, device="cpu", precision="fp32")
    line = lines[0]
    item = {"prompt": line["text"], "seed": line["seed"], "duration": 0.3, "reference": line["reference"],
            "reference_text": line["reference_text"]}  # fmt: skip
    result = generator.generate([item])[0]
    saved, rate = sf.read(wav_path, dtype="float32")
    assert rate == 24000 and np.allclose(saved, np.clip(result.wav[0], -1, 1), atol=1.5 / 32768)
    # again: nothing to make
    assert main(["review", str(tts_run), "--device", "cpu", "--duration", "0.3", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["generated"] == 0 and again["existing"] + again["reused"] == summary["generated"] + summary["reused"]


def test_tts_review_with_a_prompts_file(tts_run, tmp_path, capsys):
    ref = tmp_path / "voice.wav"
    sf.write(ref, (0.2 * np.sin(np.arange(12000) / 7.0)).astype(np.float32), 16000)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"text": "Hello there.", "speaker": "guest", "reference": "voice.wav", "reference_text": "She sells."}\n'
        '{"text": "No reference here.", "seed": 4}\n'
        '{"text": "Bad.", "reference": "voice.wav"}\n'
    )
    code = main(["review", str(tts_run), "--device", "cpu", "--duration", "0.2", "--epochs", "last",
                 "--prompts", str(prompts), "--json"])  # fmt: skip
    assert code == 1  # a skipped line
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped_lines"] == [f"{prompts}:3: reference_text: a voice reference needs its transcript "
                                        "(reference_text)"]  # fmt: skip
    stored = [json.loads(x) for x in (tts_run / "samples/review/prompts.jsonl").read_text().splitlines()]
    assert [s["text"] for s in stored] == ["Hello there.", "No reference here."]
    assert stored[0]["reference"] == str(ref.resolve())
    html = (tts_run / "samples/index.html").read_text()
    assert "guest · reference voice.wav" in html and "the model&#x27;s own voice" in html


def test_generate_dispatches_a_tts_run(tts_run, tmp_path, capsys):
    """`tunesmith generate RUN` on the same run (the family is read from its checkpoint's meta)."""
    out = tmp_path / "gen"
    code = main(["generate", str(tts_run), "--text", "Hello there.", "--duration", "0.2", "--device", "cpu",
                 "--checkpoint", "last", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (record,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert record["prompt"] == "Hello there." and record["sample_rate"] == 24000
    assert (record["temperature"], record["top_k"], record["seed"]) == (0.0, 0, 0)  # the family's: greedy
