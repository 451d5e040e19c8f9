"""tokenizer.bpe_vocab_size end to end on a fake MAESTRO: merges learned on the train split only and kept in
the run, carried by the checkpoint, used by generate-midi (0 repairs), reused by a partition-task fine-tuning
through init_from; velocity tasks refused with BPE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.cli import main
from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
from tunesmith.errors import UserError
from tunesmith.inference.midi_eval import evaluate_midi_run
from tunesmith.models.midi.bpe import BpeTokenizer, learn_bpe
from tunesmith.models.midi.loading import load_midi_model
from tunesmith.models.midi.notes import write_midi
from tunesmith.models.midi.synthetic import make_fake_maestro, synth_piece
from tunesmith.models.midi.tokenizer import MERGED, MidiTokenizerConfig, build_tokenizer
from tunesmith.tasks import build_solver, midi_bpe

BPE_SIZE = 400
SMALL = [
    "model.dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=128",
    "dataset.context_size=48",
    "dataset.batch_size=4",
    "piano_task.notes_per_record=12",
    "train.updates_per_epoch=2",
    "train.epochs=1",
    "train.checkpoint.keep_last=0",
    "generate.num_samples=1",
    "generate.tokens=16",
    "generate.prompt_tokens=12",
    "task_eval.max_records=2",
    "eval_splits={}",
    f"tokenizer.bpe_vocab_size={BPE_SIZE}",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("midi_bpe")
    make_fake_maestro(root / "src", pieces_per_composer=4, seconds=5.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    return root / "data"


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory) -> dict:
    return build_solver("midi", "tiny", [*SMALL, f"data={data}"], runs_dir=tmp_path_factory.mktemp("runs")).fit()


def test_merges_come_from_the_train_split_and_travel_with_the_checkpoint(data, pretrained, tmp_path) -> None:
    run_dir = Path(pretrained["run_dir"])
    store = MidiNotesStore(data)
    base = build_tokenizer(MidiTokenizerConfig())
    expected = learn_bpe(base, [base.encode(store.notes(i)) for i in store.select("train")], BPE_SIZE)
    everything = learn_bpe(base, [base.encode(store.notes(i)) for i in range(len(store))], BPE_SIZE)
    assert expected.merges != everything.merges  # the valid/test pieces would change them
    cached = json.loads((run_dir / midi_bpe.CACHE_FILE).read_text())
    assert cached["desc"] == expected.describe()
    # every checkpoint carries the tokenizer: the training state and config.json's meta
    last = run_dir / "checkpoints" / "last"
    assert ckpt.load_state(last)["extra"]["tokenizer_desc"] == expected.describe()
    assert ckpt.read_config(last)["meta"]["tokenizer_desc"]["merges"] == [list(m) for m in expected.merges]
    loaded = load_midi_model(run_dir, which="last")
    assert isinstance(loaded.tokenizer, BpeTokenizer) and loaded.tokenizer.merges == expected.merges
    assert loaded.model.embed.weight.shape[0] == expected.vocab_size
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    evaluated = [h for h in history if h["stage"] == "evaluate"][-1]
    assert "valid/loss_merged" in evaluated  # the merged tokens' own loss
    # generate-midi loads the learned tokenizer from the checkpoint: a continuation with 0 repairs
    prompt = tmp_path / "prompt.mid"
    write_midi(synth_piece("chopin", 2.0, seed=4), prompt)
    out = tmp_path / "cont.mid"
    args = ["generate-midi", str(run_dir), "--which", "last", "--prompt", str(prompt), "--tokens", "30"]
    assert main([*args, "--out", str(out), "--json"]) == 0
    assert out.is_file()


def test_generate_midi_reports_zero_repairs(pretrained, tmp_path, capsys) -> None:
    prompt = tmp_path / "prompt.mid"
    write_midi(synth_piece("bach", 2.0, seed=5), prompt)
    args = ["generate-midi", str(pretrained["run_dir"]), "--which", "last", "--prompt", str(prompt)]
    assert main([*args, "--tokens", "40", "--seed", "3", "--out", str(tmp_path / "o.mid"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["repairs"] == 0 and summary["notes"] > summary["prompt_notes"]


def test_a_resumed_or_second_rank_reads_the_cached_merges(data, pretrained, monkeypatch) -> None:
    def no_learning(*args, **kwargs):
        raise AssertionError("learned again instead of reading RUN/tokenizer_bpe.json")

    monkeypatch.setattr(midi_bpe, "learn_bpe", no_learning)
    base = build_tokenizer(MidiTokenizerConfig())
    store = MidiNotesStore(data)
    tok = midi_bpe.run_tokenizer(base, BPE_SIZE, store=store, run_dir=Path(pretrained["run_dir"]), is_main=False)
    cached = json.loads((Path(pretrained["run_dir"]) / midi_bpe.CACHE_FILE).read_text())
    assert tok.describe() == cached["desc"]
    # another vocabulary size is another key: learnt again (here: refused by the stub)
    with pytest.raises(AssertionError, match="learned again"):
        midi_bpe.run_tokenizer(base, BPE_SIZE + 1, store=store, run_dir=Path(pretrained["run_dir"]))
    assert midi_bpe.run_tokenizer(base, 0, store=store, run_dir=Path(pretrained["run_dir"])) is base


def test_partition_fine_tuning_reuses_the_pretrained_merges(data, pretrained, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    overrides = [*SMALL, f"data={data}", "stage=piano_task", "piano_task.tasks=[loud_from_soft]"]
    tuned = build_solver("midi", "tiny", [*overrides, f"init_from={pretrained['run_dir']}"], runs_dir=runs).fit()
    pre = load_midi_model(pretrained["run_dir"], which="last").tokenizer
    post = load_midi_model(tuned["run_dir"], which="last")
    assert post.tokenizer.describe() == pre.describe()
    assert not (Path(tuned["run_dir"]) / midi_bpe.CACHE_FILE).exists()  # taken from init_from, not learned
    history = [json.loads(line) for line in (Path(tuned["run_dir"]) / "history.jsonl").read_text().splitlines()]
    evaluated = [h for h in history if h["stage"] == "evaluate"][-1]
    assert evaluated["valid/loud_from_soft/repairs"] == 0 and 0 <= evaluated["valid/loud_from_soft/note_f1"] <= 1
    # eval-only on the same checkpoint rebuilds the tokenizer from it and reproduces the training figures
    report = evaluate_midi_run(tuned["run_dir"], split="valid", checkpoint="last", num_samples=None, seed=0)
    for key in ("loss", "loud_from_soft/note_f1", "loud_from_soft/repairs"):
        assert report.splits["valid"][key] == pytest.approx(evaluated[f"valid/{key}"], rel=1e-5), key
    prompt = tmp_path / "soft.mid"
    write_midi(synth_piece("mozart", 3.0, seed=6), prompt)
    args = ["generate-midi", str(tuned["run_dir"]), "--which", "last", "--prompt", str(prompt)]
    assert main([*args, "--task", "loud_from_soft", "--out", str(tmp_path / "t.mid"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["repairs"] == 0
    # velocity tasks are refused with BPE, before anything is learnt or built
    with pytest.raises(UserError, match="velocity tasks"):
        build_solver("midi", "tiny", [*overrides[:-1], "piano_task.tasks=[velocity]"], runs_dir=runs).fit()
    # a source trained without BPE cannot start a BPE run
    plain = build_solver("midi", "tiny", [*SMALL[:-1], f"data={data}", "train.updates_per_epoch=1"], runs_dir=runs)
    plain_dir = plain.fit()["run_dir"]
    with pytest.raises(UserError, match="not trained with a BPE tokenizer"):
        build_solver("midi", "tiny", [*overrides, f"init_from={plain_dir}"], runs_dir=runs).fit()


def test_windows_are_shorter_in_merged_tokens(data, pretrained) -> None:
    from tunesmith.data.datasets.midi import AugmentedWindows, token_stream
    from tunesmith.models.midi.augment import MidiAugmentConfig

    store = MidiNotesStore(data)
    tok = load_midi_model(pretrained["run_dir"], which="last").tokenizer
    ids = store.select("train")
    merged = token_stream(store, ids, tok)
    base = token_stream(store, ids, tok.base)
    assert np.array_equal(tok.expand(merged), base)
    assert len(base) / len(merged) > 1.3
    # augmented pretraining windows are re-encoded with the merges and stay in the grammar
    augment = MidiAugmentConfig(pitch_shift=3, tempo_stretch=0.1)
    windows = AugmentedWindows(store, ids, tok, 48, augment, stream_tokens=[100] * len(ids))
    merged_seen = 0
    for index in range(6):
        item = windows[(index, 11)]
        tokens = item["tokens"][: int(item["mask"].sum()) + 1].numpy()
        merged_seen += int((tok.types_of(tokens) == MERGED).sum())
        assert tok.grammar().violations(tokens[1:], after=int(tokens[0])) == 0  # windows start at a note
    assert merged_seen > 20


class Killed(Exception):
    pass


def test_a_killed_bpe_run_resumes_with_its_merges(data, tmp_path, monkeypatch) -> None:
    from tunesmith.engine.solver import Solver

    original = Solver.save_checkpoints

    def save_then_die(self, improved):
        original(self, improved)
        if self.epoch == 1:
            raise Killed

    overrides = [*SMALL, f"data={data}", "train.epochs=2", "train.updates_per_epoch=1", "generate.num_samples=0"]
    monkeypatch.setattr(Solver, "save_checkpoints", save_then_die)
    with pytest.raises(Killed):
        build_solver("midi", "tiny", overrides, runs_dir=tmp_path).fit()
    monkeypatch.setattr(Solver, "save_checkpoints", original)
    monkeypatch.setattr(midi_bpe, "learn_bpe", lambda *a, **k: pytest.fail("learned again on resume"))
    resumed = build_solver("midi", "tiny", overrides, runs_dir=tmp_path).fit()
    run_dir = Path(resumed["run_dir"])
    steps = [json.loads(line)["step"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert max(steps) == 2
    cached = json.loads((run_dir / midi_bpe.CACHE_FILE).read_text())["desc"]
    assert ckpt.load_state(run_dir / "checkpoints" / "last")["extra"]["tokenizer_desc"] == cached
