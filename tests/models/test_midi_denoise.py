"""Pitch and time denoising piano tasks: the noise they draw (levels from piano_task), their records and
task tokens, and their free-running metrics against an independent computation (a perfect answer, the
noisy input as the answer, scipy matching). The fine-tuning run: tests/tasks/test_midi_denoise_train.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from tunesmith.data.datasets.midi import PianoTaskRecords
from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
from tunesmith.engine.sampler import VALID_SEED
from tunesmith.errors import UserError
from tunesmith.models.midi import task_eval
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.synthetic import make_fake_maestro, synth_piece
from tunesmith.models.midi.task_eval import FreeRunStats, TaskEvalConfig, record_parts, summarize
from tunesmith.models.midi.tasks import PianoTaskConfig, add_note_noise, build_record, check_task_config
from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer

TASKS = ["pitch_denoise", "time_denoise"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("denoise")
    make_fake_maestro(root / "src", pieces_per_composer=2, seconds=4.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    return root / "data"


def test_pitch_noise_level_and_range() -> None:
    notes = synth_piece("chopin", 30.0, seed=2)
    cfg = PianoTaskConfig(tasks=["pitch_denoise"], pitch_noise=3, pitch_noise_fraction=0.3)
    moved, steps = 0, []
    for seed in range(20):
        noisy = add_note_noise("pitch_denoise", notes, cfg, np.random.default_rng(seed), 21, 108)
        # pitch noise keeps the timing: the same notes in the same (onset, pitch) order up to the moved pitch
        assert np.array_equal(np.sort(noisy.start), np.sort(notes.start)) and len(noisy) == len(notes)
        # match each noisy note back to its note through the untouched end time and onset
        key = lambda n: np.lexsort((n.end, n.start))  # noqa: E731
        a, b = notes.take(key(notes)), noisy.take(key(noisy))
        diff = b.pitch.astype(int) - a.pitch.astype(int)
        moved += int((diff != 0).sum())
        steps += list(diff[diff != 0])
        assert np.all((noisy.pitch >= 21) & (noisy.pitch <= 108))
    share = moved / (20 * len(notes))
    assert share == pytest.approx(0.3, abs=0.03)
    assert set(np.abs(steps)) == {1, 2, 3} and min(steps) < 0 < max(steps)
    again = add_note_noise("pitch_denoise", notes, cfg, np.random.default_rng(7), 21, 108)
    assert np.array_equal(
        again.pitch, add_note_noise("pitch_denoise", notes, cfg, np.random.default_rng(7), 21, 108).pitch
    )
    # at the edge of the range a move goes the other way
    edge = Notes([21, 108], [0.0, 0.5], [0.4, 0.9], [64, 64])
    all_moved = PianoTaskConfig(pitch_noise=2, pitch_noise_fraction=1.0)
    out = add_note_noise("pitch_denoise", edge, all_moved, np.random.default_rng(0), 21, 108)
    assert out.pitch[0] > 21 and out.pitch[1] < 108


def test_time_noise_level_keeps_durations() -> None:
    notes = synth_piece("bach", 30.0, seed=1)
    cfg = PianoTaskConfig(tasks=["time_denoise"], time_noise_std=0.02)
    origin = float(notes.start.min())
    shifts = []
    for seed in range(10):
        noisy = add_note_noise("time_denoise", notes, cfg, np.random.default_rng(seed), 21, 108)
        assert noisy.start.min() >= origin
        # the pitch, velocity and duration of every note survive (sorted multisets compared)
        for field in ("pitch", "velocity"):
            assert np.array_equal(np.sort(getattr(noisy, field)), np.sort(getattr(notes, field)))
        assert np.allclose(np.sort(noisy.duration), np.sort(notes.duration))
        # the same rng draws the same offsets: recompute them independently
        drawn = np.random.default_rng(seed).normal(0.0, 0.02, len(notes))
        expected = np.maximum(notes.start + drawn, origin)
        assert np.allclose(np.sort(noisy.start), np.sort(expected))
        shifts.append(drawn)
    assert np.std(np.concatenate(shifts)) == pytest.approx(0.02, rel=0.05)


def test_records_task_tokens_and_zero_noise() -> None:
    tok = build_tokenizer(MidiTokenizerConfig())
    notes = synth_piece("mozart", 6.0, seed=3).take(slice(0, 24))
    for task, slot, quiet in (
        ("pitch_denoise", 5, PianoTaskConfig(tasks=TASKS, pitch_noise_fraction=0.0)),
        ("time_denoise", 6, PianoTaskConfig(tasks=TASKS, time_noise_std=0.0)),
    ):
        rec = build_record(tok, task, notes, PianoTaskConfig(tasks=TASKS), np.random.default_rng(0), 2000)
        assert tok.vocab[rec.tokens[1]] == f"Reserved_{slot}"
        prompt, target = record_parts(rec)
        assert np.array_equal(target, tok.encode(notes, float(notes.start.min())))  # the true notes
        assert not np.array_equal(prompt[2:-1], target)  # the source is noisy
        clean = build_record(tok, task, notes, quiet, np.random.default_rng(0), 2000)
        prompt, target = record_parts(clean)
        assert np.array_equal(prompt[2:-1], target)  # no noise: the source is the target
    for bad, match in (
        (PianoTaskConfig(tasks=TASKS, pitch_noise=0), "pitch_noise"),
        (PianoTaskConfig(tasks=TASKS, pitch_noise_fraction=1.5), "pitch_noise_fraction"),
        (PianoTaskConfig(tasks=TASKS, time_noise_std=-1), "time_noise_std"),
    ):
        with pytest.raises(UserError, match=match):
            check_task_config(bad)


def _reference_matching(pred: Notes, ref: Notes, window: float) -> np.ndarray:
    """|onset errors| of a maximum one-to-one same-pitch matching within ``window`` of least total error."""
    if not len(pred) or not len(ref):
        return np.zeros(0)
    diff = np.abs(pred.start[:, None] - ref.start[None, :])
    ok = (pred.pitch[:, None] == ref.pitch[None, :]) & (diff <= window + 1e-9)
    rows, cols = linear_sum_assignment(np.where(ok, diff - 1e3, 0.0))
    keep = ok[rows, cols]
    return diff[rows, cols][keep]


@pytest.mark.parametrize("kind", ["seconds", "remi"])
def test_metrics_of_a_perfect_and_a_copying_answer(data, kind, monkeypatch) -> None:
    store = MidiNotesStore(data)
    tok = build_tokenizer(MidiTokenizerConfig(kind=kind))
    cfg = PianoTaskConfig(tasks=TASKS, notes_per_record=16, min_notes=4, time_noise_std=0.01, pitch_noise_fraction=0.4)
    dataset = PianoTaskRecords(store, store.select("valid"), tok, cfg, 256, train=False)
    te = TaskEvalConfig(max_records=0, onset_tolerance=0.05, onset_window=0.25)
    records = {t: [dataset.record((i, VALID_SEED)) for i in dataset.task_indices(t)] for t in TASKS}
    assert all(records.values())

    def run(answer: str) -> dict[str, float]:
        def fake(model, tok_, task, prompt, sampling, **_):
            rec = next(r for r in records[task] if np.array_equal(record_parts(r)[0], prompt))
            head, target = record_parts(rec)
            return target if answer == "truth" else head[2:-1] if cfg.prompt_format == "task_first" else head[1:-1]

        monkeypatch.setattr(task_eval, "generate_target", fake)
        stats = FreeRunStats(tok, TASKS, te, 64.0)
        for t in TASKS:
            for k, rec in enumerate(records[t]):
                stats.add(None, rec, k)
        return summarize(stats.sums, TASKS, te)

    perfect, copy = run("truth"), run("copy")
    for t in TASKS:
        assert perfect[f"{t}/note_f1"] == 1.0 and perfect[f"{t}/repairs"] == 0
        # answering with the noisy input scores exactly the copy baseline
        assert copy[f"{t}/note_f1"] == pytest.approx(perfect[f"{t}/baseline_copy_note_f1"])
    assert perfect["pitch_denoise/baseline_copy_note_f1"] < 1.0  # 10 ms onset noise stays within the F1 tolerance
    assert perfect["pitch_denoise/pitch_accuracy"] == 1.0
    assert copy["pitch_denoise/pitch_accuracy"] == pytest.approx(perfect["pitch_denoise/baseline_copy_pitch_accuracy"])
    assert perfect["time_denoise/onset_mae"] == 0.0 and perfect["time_denoise/onset_matched"] == 1.0
    assert copy["time_denoise/onset_mae"] == pytest.approx(perfect["time_denoise/baseline_copy_onset_mae"])

    # the copy baseline against an independent computation from the decoded notes
    hits = n_ref = 0
    errors: list[np.ndarray] = []
    for t in TASKS:
        for rec in records[t]:
            head, target = record_parts(rec)
            src, ref = tok.decode(head), tok.decode(target)
            if t == "pitch_denoise":
                hits += len(_reference_matching(src, ref, 0.05))
                n_ref += len(ref)
            else:
                errors.append(_reference_matching(src, ref, 0.25))
    assert perfect["pitch_denoise/baseline_copy_pitch_accuracy"] == pytest.approx(hits / n_ref)
    assert 0.4 < hits / n_ref < 0.9  # about 40 % of the pitches were moved
    errs = np.concatenate(errors)
    assert perfect["time_denoise/baseline_copy_onset_mae"] == pytest.approx(errs.mean(), abs=1e-9)
    assert perfect["time_denoise/baseline_copy_onset_mae"] > 0
