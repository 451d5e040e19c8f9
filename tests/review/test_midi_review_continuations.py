"""`tunesmith review` on a pretrain-stage MIDI run: per distinct checkpoint, piano rolls of the sampled
continuation of fixed pieces' openings (prompt grey + generated), equal to an independent `continue_notes`
call with the run's generate settings; the continuations are MIDI files that `--list-epochs` counts."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tunesmith.cli import main
from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
from tunesmith.models.midi.generation import SamplingConfig, continue_notes
from tunesmith.models.midi.loading import load_midi_model
from tunesmith.models.midi.notes import read_midi
from tunesmith.models.midi.synthetic import make_fake_maestro
from tunesmith.models.midi.task_eval import evenly_spaced
from tunesmith.review import midi as midi_review
from tunesmith.review.checkpoints import list_checkpoints
from tunesmith.review.grid import distinct_checkpoints
from tunesmith.tasks import build_solver

PROMPT_TOKENS, NEW_TOKENS, TOP_P = 16, 24, 0.9
SMALL = [
    "model.dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=128",
    "dataset.batch_size=4",
    "dataset.context_size=64",
    "eval_splits={}",
    "train.updates_per_epoch=2",
    "train.epochs=2",
    "train.checkpoint.keep_last=0",
    "train.log.tensorboard=false",
    "generate.num_samples=0",
    f"generate.prompt_tokens={PROMPT_TOKENS}",
    f"generate.tokens={NEW_TOKENS}",
    f"generate.top_p={TOP_P}",
]


class Rolls(HTMLParser):
    """Every piano-roll SVG: role, data-notes, data-context-notes, and the note rects it holds by class."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[dict] = []
        self.in_svg = False

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        if tag == "svg" and "pianoroll" in (a.get("class") or ""):
            context = a.get("data-context-notes")
            self.svgs.append(
                {
                    "role": a["data-role"],
                    "notes": int(a["data-notes"]),
                    "context": None if context is None else int(context),
                    "pn": 0,
                    "pp": 0,
                }
            )
            self.in_svg = True
        elif tag == "rect" and self.in_svg and a.get("class") in ("pn", "pp"):
            self.svgs[-1][a["class"]] += 1

    def handle_endtag(self, tag) -> None:
        if tag == "svg":
            self.in_svg = False


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("midi_review_pretrain")
    make_fake_maestro(root / "src", pieces_per_composer=3, seconds=4.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    result = build_solver("midi", "tiny", [*SMALL, f"data={root / 'data'}"], runs_dir=root / "runs").fit()
    return {"dir": Path(result["run_dir"]), "data": root / "data"}


def test_pretrain_run_page_draws_each_checkpoints_continuations(run, monkeypatch, capsys) -> None:
    monkeypatch.setattr(midi_review.shutil, "which", lambda name: None)  # no fluidsynth: no audio
    run_dir = run["dir"]
    assert main(["review", str(run_dir), "--data", str(run["data"]), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    text = (run_dir / "samples" / "index.html").read_text()
    page = Rolls()
    page.feed(text)
    assert "no piano tasks to measure free-running" in text and "<audio" not in text

    groups = distinct_checkpoints(list_checkpoints(run_dir))
    assert len(groups) >= 2  # epoch 1 and epoch 2 differ
    store = MidiNotesStore(run["data"])
    pieces = evenly_spaced(store.select("valid"), midi_review.DEFAULT_NUM_PIECES)
    assert len(pieces) == 2
    assert first["generated"] == len(pieces) * len(groups)
    per_row = 1 + len(groups)
    assert [s["role"] for s in page.svgs] == (["prompt"] + ["generated"] * len(groups)) * len(pieces)
    for k, piece in enumerate(pieces):
        svgs = page.svgs[k * per_row : (k + 1) * per_row]
        # the prompt: the piece's first generate.prompt_tokens tokens, as the generate stage takes it
        loaded = load_midi_model(groups[0][0].folder)
        tok = loaded.tokenizer
        prompt = tok.decode(tok.encode(store.notes(piece))[:PROMPT_TOKENS])
        assert 0 < len(prompt) == svgs[0]["notes"] == svgs[0]["pn"]
        for group, svg in zip(groups, svgs[1:], strict=True):
            # an independent continuation with the run's generate settings, seeded by the piece id
            model = load_midi_model(group[0].folder)
            full, repairs = continue_notes(
                model.model, tok, prompt, NEW_TOKENS, SamplingConfig(1.0, 0, TOP_P, seed=piece)
            )
            assert repairs == 0
            assert svg["context"] == svg["pp"] == len(prompt)
            assert svg["notes"] == svg["pn"] == len(full) - len(prompt) > 0
            # every checkpoint of the group has the continuation as a MIDI file (twins share it)
            for ref in group:
                written = read_midi(run_dir / "samples" / "review" / ref.name / f"piece{piece}_continuation.mid")
                assert len(written) == len(full)
                assert np.array_equal(np.sort(written.pitch), np.sort(full.pitch))
                assert np.allclose(np.sort(written.start), np.sort(full.start), atol=0.01)


def test_list_epochs_counts_midi_samples_and_a_second_review_reuses_them(run, monkeypatch, capsys) -> None:
    monkeypatch.setattr(midi_review.shutil, "which", lambda name: None)
    run_dir = run["dir"]
    assert main(["review", str(run_dir), "--data", str(run["data"])]) == 0  # generated once (module run)
    capsys.readouterr()
    assert main(["review", str(run_dir), "--list-epochs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in listed}
    assert {"epoch_0001", "epoch_0002", "best", "last"} <= names
    assert all(r["samples"] == midi_review.DEFAULT_NUM_PIECES for r in listed), listed

    # a second review generates nothing; new weights in a folder (stale stamp) count 0 until re-reviewed
    assert main(["review", str(run_dir), "--data", str(run["data"]), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["generated"] == 0 and again["existing"] > 0
    source = run_dir / "samples" / "review" / "epoch_0001" / "source.json"
    stamp = json.loads(source.read_text())
    source.write_text(json.dumps({**stamp, "weights_sha256": "0" * 64}))
    assert main(["review", str(run_dir), "--list-epochs", "--json"]) == 0
    stale = {r["name"]: r["samples"] for r in json.loads(capsys.readouterr().out)}
    assert stale["epoch_0001"] == 0 and stale["last"] == midi_review.DEFAULT_NUM_PIECES
    assert main(["review", str(run_dir), "--data", str(run["data"]), "--epochs", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["generated"] == midi_review.DEFAULT_NUM_PIECES
    assert main(["review", str(run_dir), "--list-epochs", "--json"]) == 0
    fresh = {r["name"]: r["samples"] for r in json.loads(capsys.readouterr().out)}
    assert fresh["epoch_0001"] == midi_review.DEFAULT_NUM_PIECES
