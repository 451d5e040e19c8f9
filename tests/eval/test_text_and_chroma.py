"""WER/CER edit distances against a slow reference, chroma cosine without models, and the metric suite's skips."""

from __future__ import annotations

import random

import numpy as np
import pytest

from support.evalmodels import RATE, tone
from tunesmith.errors import UserError
from tunesmith.eval.chroma_cosine import chroma_cosine, clip_chroma, musicgen_chroma, paired_chroma_cosine
from tunesmith.eval.embed import AudioClip
from tunesmith.eval.suite import EvalReport, MetricModels, evaluate_clips, metric_direction, parse_metrics
from tunesmith.eval.wer import edit_distance, error_rates, normalise_text


def slow_levenshtein(a, b) -> int:
    """The full dynamic-programming table, written out (the independent reference)."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return table[-1][-1]


def test_edit_distance_matches_the_slow_reference():
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        assert edit_distance(a, b) == slow_levenshtein(a, b), (a, b)
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["x", "y"]) == 2


def test_wer_and_cer():
    assert normalise_text("  Hello, World!  It's   me. ") == "hello world it's me"
    rates = error_rates(["the cat sat on the mat", "Hello world"], ["the cat sat on mat", "hello, world!"])
    assert rates["wer"] == pytest.approx(1 / 8)  # one deletion over 8 reference words
    assert rates["words"] == 8
    assert rates["cer"] == pytest.approx(4 / (22 + 11))  # "the " deleted
    assert error_rates(["a b"], ["a b"])["wer"] == 0.0
    assert error_rates(["a b"], ["c d e"])["wer"] == pytest.approx(1.5)


def test_chroma_cosine_follows_pitch_classes():
    a = musicgen_chroma(tone(440.0, 1.0, 22050)[0], 22050)
    assert a.shape[1] == 12 and int(np.argmax(a.mean(0))) == 9  # A
    octave = musicgen_chroma(tone(880.0, 1.0, 22050)[0], 22050)
    fifth = musicgen_chroma(tone(659.26, 1.0, 22050)[0], 22050)  # E
    assert chroma_cosine(a, a) == pytest.approx(1.0)
    assert chroma_cosine(a, octave) > 0.95 > 0.3 > chroma_cosine(a, fifth)
    assert np.isnan(chroma_cosine(np.zeros((4, 12)), a))
    clips = [AudioClip("a", tone(440.0), RATE), AudioClip("e", tone(659.26), RATE)]
    mean, per_pair = paired_chroma_cosine(clips, clips[::-1])
    assert len(per_pair) == 2 and mean < 0.3
    # another chroma function ([12, F] or [F, 12]) can be passed in
    transposed = clip_chroma(clips[0], lambda wav, sr: musicgen_chroma(wav, sr).T)
    assert transposed.shape[1] == 12


def test_metric_names_and_directions():
    assert parse_metrics("kld, fad") == ["fad", "kld"]
    with pytest.raises(UserError, match="unknown metric"):
        parse_metrics("fad,bleu")
    assert metric_direction("fad") == "min" and metric_direction("clap") == "max"
    # free-running piano-task metrics (issue 19), as logged per split and task: best by any of them
    assert metric_direction("valid/velocity/velocity_mae") == "min"
    assert metric_direction("test/loud_from_soft/note_f1") == "max"
    assert metric_direction("valid/velocity/velocity_corr") == "max"
    assert metric_direction("valid/velocity/baseline_mean_velocity_mae") is None  # a baseline is no model score
    assert metric_direction("ppl") == "min" and metric_direction("whatever") is None


def test_metrics_without_models_or_descriptions_are_skipped_with_a_reason():
    refs = [AudioClip(f"r{i}", tone(220.0 * (i + 1)), RATE) for i in range(3)]
    gens = [AudioClip(f"g{i}", tone(230.0 * (i + 1)), RATE) for i in range(3)]
    report = evaluate_clips(refs, gens, ["fad", "clap", "kld", "chroma", "wer"], MetricModels())
    skipped = {r.name: r.skipped for r in report.results}
    assert "no embedding model" in skipped["fad"] and "--embedder-dir" in skipped["fad"]
    assert "no descriptions" in skipped["clap"] and "no descriptions" in skipped["kld"]
    assert "no transcripts" in skipped["wer"]
    assert not skipped["chroma"] and "chroma" in report.scalars()
    described = [AudioClip(c.name, c.wav, c.sample_rate, description="x") for c in gens]
    report = evaluate_clips(refs, described, ["clap", "kld"], MetricModels())
    assert "--clap-dir" in report.results[0].skipped and "--classifier-dir" in report.results[1].skipped
    table = report.table()
    assert "skipped" in table and "--clap-dir" in table
    assert isinstance(EvalReport().to_dict(), dict)


def test_default_chroma_is_musicgens():
    chroma = musicgen_chroma(tone(440.0, 2.0)[0], RATE)
    assert chroma.shape == (1 + 2 * 32000 // 4096, 12) and int(np.argmax(chroma.mean(0))) == 9
    clip = AudioClip("a", tone(440.0, 2.0), RATE)
    assert np.array_equal(clip_chroma(clip), chroma)  # what the suite uses when no chroma function is given
