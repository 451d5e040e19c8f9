"""`tunesmith review` on a MIDI run: piano rolls of prompt / target / generated for fixed eval records per
distinct checkpoint, the free-running metrics with their baselines per checkpoint, the fluidsynth note."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tunesmith.cli import main
from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
from tunesmith.models.midi.loading import load_midi_model
from tunesmith.models.midi.synthetic import make_fake_maestro
from tunesmith.models.midi.task_eval import evenly_spaced
from tunesmith.models.midi.tasks import PianoTaskConfig, partition_target, slice_starts
from tunesmith.review import midi as midi_review
from tunesmith.tasks import build_solver

NPR = 10
TASKS = ["velocity", "loud_from_soft"]
SMALL = [
    "model.dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=128",
    "dataset.batch_size=4",
    f"piano_task.notes_per_record={NPR}",
    f"piano_task.tasks=[{','.join(TASKS)}]",
    "stage=piano_task",
    "task_eval.max_records=2",
    "train.updates_per_epoch=1",
    "train.epochs=2",
    "train.checkpoint.keep_last=0",
    "train.log.tensorboard=false",
    "generate.num_samples=0",
]


class Page(HTMLParser):
    """The piano-roll SVGs (role, data-notes, rects counted), the grid's header cells and the metric tables."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[dict] = []
        self.in_svg = False
        self.headers: list[str] = []
        self.in_grid = self.in_th = False
        self.metric_rows: list[list[str]] = []
        self.in_metrics = self.in_td = False
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        if tag == "svg" and "pianoroll" in (a.get("class") or ""):
            self.svgs.append({"role": a["data-role"], "notes": int(a["data-notes"]), "rects": 0})
            self.in_svg = True
        elif tag == "rect" and self.in_svg and a.get("class") == "pn":
            self.svgs[-1]["rects"] += 1
        elif tag == "table" and "pianorolls" in (a.get("class") or ""):
            self.in_grid = True
        elif tag == "table" and "metrics" in (a.get("class") or ""):
            self.in_metrics = True
        elif tag == "th" and self.in_grid:
            self.in_th, self.text = True, []
        elif tag == "tr" and self.in_metrics:
            self.metric_rows.append([])
        elif tag == "td" and self.in_metrics:
            self.in_td, self.text = True, []

    def handle_endtag(self, tag) -> None:
        if tag == "svg":
            self.in_svg = False
        elif tag == "th" and self.in_th:
            self.headers.append("".join(self.text))
            self.in_th = False
        elif tag == "thead":
            self.in_grid = False
        elif tag == "td" and self.in_td:
            self.metric_rows[-1].append("".join(self.text))
            self.in_td = False
        elif tag == "table":
            self.in_metrics = False

    @staticmethod
    def audio_sources(text: str) -> list[str]:
        found: list[str] = []
        parser = HTMLParser()
        parser.handle_starttag = lambda tag, attrs: found.append(dict(attrs)["src"]) if tag == "audio" else None
        parser.feed(text)
        return found

    def handle_data(self, data) -> None:
        if self.in_th or self.in_td:
            self.text.append(data)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("midi_review")
    make_fake_maestro(root / "src", pieces_per_composer=3, seconds=4.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    result = build_solver("midi", "tiny", [*SMALL, f"data={root / 'data'}"], runs_dir=root / "runs").fit()
    return {"root": root, "dir": Path(result["run_dir"]), "data": root / "data"}


def test_review_of_a_midi_run_draws_piano_rolls_and_metrics(run, monkeypatch, capsys) -> None:
    monkeypatch.setattr(midi_review.shutil, "which", lambda name: None)  # as on a box without fluidsynth
    run_dir = run["dir"]
    assert main(["review", str(run_dir), "--data", str(run["data"])]) == 0
    text = (run_dir / "samples" / "index.html").read_text()
    page = Page()
    page.feed(text)

    # epoch 1, epoch 2 (best?, last): one column per distinct set of weights, after the truth column
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir())
    assert "epoch_0001" in checkpoints and "epoch_0002" in checkpoints
    assert len(page.headers) == 1 + 2 and page.headers[1].startswith("epoch 1")
    assert page.headers[2].startswith("epoch 2") and "last" in page.headers[2]

    # the records: first slice of 2 pieces spread over the valid split, one row per task
    store = MidiNotesStore(run["data"])
    pieces = evenly_spaced(store.select("valid"), midi_review.DEFAULT_NUM_PIECES)
    loaded = load_midi_model(run_dir / "checkpoints" / "last")
    tok = loaded.tokenizer
    rows = [(p, t) for p in pieces for t in TASKS]
    per_row = 2 + 2  # prompt, target, generated × 2 checkpoints
    assert [s["role"] for s in page.svgs] == ["prompt", "target", "generated", "generated"] * len(rows)
    cfg = PianoTaskConfig(tasks=TASKS, notes_per_record=NPR)
    for k, (piece, task) in enumerate(rows):
        svgs = page.svgs[k * per_row : (k + 1) * per_row]
        for svg in svgs:
            assert svg["rects"] == svg["notes"]
        start = slice_starts(store.pieces[piece]["note_count"], cfg)[0]
        part = store.notes(piece).take(slice(start, start + NPR))
        part = part.take(np.nonzero(tok.in_range(part))[0])
        if task == "velocity":  # every note of the slice is in prompt, target and (velocities only) generated
            assert [s["rects"] for s in svgs] == [len(part)] * 4
        else:  # the slice split into the soft source and the loud target notes
            loud = partition_target(task, part, np.random.default_rng(0))
            assert svgs[0]["rects"] + svgs[1]["rects"] == len(part)
            assert svgs[1]["rects"] == int(loud.sum()) and svgs[0]["rects"] == int((~loud).sum())
            assert all(s["rects"] >= 0 for s in svgs[2:])

    # the metrics table per checkpoint: the values in history.jsonl with their baselines
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    last_eval = [h for h in history if h["stage"] == "evaluate" and h["epoch"] == 2][-1]
    rows_by = {(r[0], r[1], r[2]): r for r in page.metric_rows if len(r) == 5}
    mae = rows_by[("valid", "velocity", "velocity_mae")]
    assert float(mae[3]) == pytest.approx(last_eval["valid/velocity/velocity_mae"], rel=1e-3)
    assert f"mean_velocity_mae {last_eval['valid/velocity/baseline_mean_velocity_mae']:.4g}" in mae[4]
    f1 = rows_by[("valid", "loud_from_soft", "note_f1")]
    assert f"copy_note_f1 {last_eval['valid/loud_from_soft/baseline_copy_note_f1']:.4g}" in f1[4]
    assert len(page.metric_rows) >= 2 * (1 + 4)  # two checkpoints, a header and rows each
    assert "fluidsynth" in text and "fluid-soundfont-gm" in text
    assert "<audio" not in text

    # a second review reuses the generated tokens; --epochs shows the "showing N of M" note
    capsys.readouterr()
    assert main(["review", str(run_dir), "--data", str(run["data"]), "--epochs", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["generated"] == 0 and summary["existing"] == len(rows)
    text = (run_dir / "samples" / "index.html").read_text()
    assert "showing 1 of 2 checkpoints" in text
    assert Page().feed(text) is None and text.count('data-role="generated"') == len(rows)


def test_audio_players_where_fluidsynth_and_a_soundfont_are_present(run, monkeypatch, tmp_path, capsys) -> None:
    sf2 = tmp_path / "FluidR3_GM.sf2"
    sf2.write_bytes(b"sf2")
    calls: list[list[str]] = []

    def fake_fluidsynth(cmd, **kwargs):  # writes the wav fluidsynth would render from the MIDI file
        calls.append(cmd)
        assert Path(cmd[-1]).read_bytes().startswith(b"MThd") and cmd[-2] == str(sf2)
        Path(cmd[cmd.index("-F") + 1]).write_bytes(b"RIFF")

    monkeypatch.setattr(midi_review.shutil, "which", lambda name: "/usr/bin/fluidsynth")
    monkeypatch.setattr(midi_review, "SOUNDFONTS", (str(tmp_path / "missing.sf2"), str(sf2)))
    monkeypatch.setattr(midi_review.subprocess, "run", fake_fluidsynth)
    assert main(["review", str(run["dir"]), "--data", str(run["data"]), "--epochs", "last"]) == 0
    text = (run["dir"] / "samples" / "index.html").read_text()
    rows = midi_review.DEFAULT_NUM_PIECES * len(TASKS)
    assert text.count("<audio ") == 3 * rows == len(calls)  # prompt, target, generated
    assert "fluid-soundfont-gm" not in text
    for src in Page.audio_sources(text):
        assert (run["dir"] / "samples" / src).is_file()
    # data that is not there: a clear error naming --data
    capsys.readouterr()
    assert main(["review", str(run["dir"]), "--data", str(tmp_path / "nope")]) == 2
    assert "--data" in capsys.readouterr().err
