"""The train/valid split by track (data.prepare.split): the fraction asked for, deterministic, stable."""

from __future__ import annotations

import json

import pytest

from support.audio import write_tone
from tunesmith.data.manifest import read_info, read_manifest
from tunesmith.data.prepare import prepare_dataset
from tunesmith.data.prepare.split import SMALL_DATASET_TRACKS, assign_splits, split_number, split_of, valid_target
from tunesmith.data.sources import Track


def tracks(n: int, start: int = 0) -> list[Track]:
    return [Track(f"/music/track {i:04d}.wav", "folder", f"track {i}") for i in range(start, start + n)]


def valid_ids(splits: dict[str, str]) -> set[str]:
    return {tid for tid, s in splits.items() if s == "valid"}


@pytest.mark.parametrize("n", [10, 40, 100])
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25])
@pytest.mark.parametrize("seed", [0, 7])
def test_small_datasets_get_the_fraction_within_one_track(n, fraction, seed):
    group = tracks(n)
    splits = assign_splits(group, seed, fraction)
    assert set(splits) == {t.track_id for t in group}
    valid = valid_ids(splits)
    assert abs(len(valid) - fraction * n) <= 1 and len(valid) >= 1
    # the lowest hashes of (seed, track id): deterministic, whatever order the tracks come in
    by_hash = sorted(group, key=lambda t: split_number(t, seed))
    assert valid == {t.track_id for t in by_hash[: len(valid)]}
    assert assign_splits(list(reversed(group)), seed, fraction) == splits


def test_the_reported_case_forty_tracks_at_ten_percent():
    assert valid_target(40, 0.1) == 4
    assert len(valid_ids(assign_splits(tracks(40), 0, 0.1))) == 4
    assert valid_target(1, 0.5) == 0 and valid_target(2, 0.01) == 1 and valid_target(3, 0.9) == 2
    assert valid_target(50, 0.0) == 0


def test_adding_tracks_moves_no_existing_track_and_keeps_the_fraction():
    fraction, seed = 0.1, 0
    splits = assign_splits(tracks(40), seed, fraction)
    total = 40
    for added in (1, 5, 10, 24, 30):
        group = tracks(total + added)
        new = assign_splits(group, seed, fraction, recorded=splits)
        assert {tid: new[tid] for tid in splits} == splits  # nobody moved, either way
        total += added
        assert abs(len(valid_ids(new)) - fraction * total) <= 1, total
        splits = new


def test_recorded_splits_are_kept_even_when_they_differ_from_the_rule():
    """A dataset prepared before this rule (per-track threshold) keeps its split; new tracks fill up."""
    group = tracks(40)
    old = {t.track_id: split_of(t, 0, 0.1) for t in group}
    assert assign_splits(group, 0, 0.1, recorded=old) == old
    more = assign_splits(tracks(60), 0, 0.1, recorded=old)
    assert {tid: more[tid] for tid in old} == old
    assert len(valid_ids(more)) == max(6, len(valid_ids(old)))


def test_large_datasets_keep_the_per_track_threshold():
    group = tracks(SMALL_DATASET_TRACKS)
    splits = assign_splits(group, 3, 0.1)
    assert splits == {t.track_id: split_of(t, 3, 0.1) for t in group}


def test_hinted_tracks_follow_their_hint():
    hinted = tracks(4)
    for t, hint in zip(hinted, (0.0, 1.0, 1.0, 1.0), strict=True):
        t.split_hint = hint
    splits = assign_splits(hinted, 0, 0.25)
    assert [splits[t.track_id] for t in hinted] == ["valid", "train", "train", "train"]


# --------------------------------------------------------------------------- through prepare


def _prep(src, out):
    return prepare_dataset([src], out, sample_rate=8000, segment=1.0, min_segment=0.5, valid_fraction=0.25,
                           progress=False)  # fmt: skip


def _track_splits(out) -> dict[str, str]:
    return {read_info(out, e)["track_id"]: s for s in ("train", "valid") for e in read_manifest(out, s)}


def test_prepare_honours_the_fraction_and_a_resume_assigns_what_an_uninterrupted_run_would(tmp_path):
    src = tmp_path / "src"
    for i in range(12):
        write_tone(src / f"t{i:02d}.wav", 1.0, 8000, freq=200 + 20 * i)
    whole = tmp_path / "whole"
    _prep(src, whole)
    expected = _track_splits(whole)
    assert len(expected) == 12 and sum(s == "valid" for s in expected.values()) == 3
    # killed after 5 tracks: the re-run finishes the other 7 and assigns the same splits
    killed = tmp_path / "killed"
    _prep(src, killed)
    log = killed / "state" / "tracks.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:5]))
    summary = _prep(src, killed)
    assert summary["run"]["processed"] == 7 and summary["run"]["skipped_already_done"] == 5
    assert _track_splits(killed) == expected


def test_rerunning_prepare_on_an_existing_dataset_does_not_reshuffle(tmp_path):
    """Splits already recorded (e.g. by an older tunesmith) stay; new tracks are added around them."""
    src = tmp_path / "src"
    for i in range(8):
        write_tone(src / f"t{i:02d}.wav", 1.0, 8000, freq=200 + 20 * i)
    out = tmp_path / "out"
    _prep(src, out)
    log = out / "state" / "tracks.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for i, record in enumerate(records):  # a split this rule would not choose: the first track only
        record["split"] = "valid" if i == 0 else "train"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = {r["track_id"]: r["split"] for r in records}
    _prep(src, out)
    assert _track_splits(out) == before
    for i in range(8, 12):
        write_tone(src / f"t{i:02d}.wav", 1.0, 8000, freq=200 + 20 * i)
    _prep(src, out)
    after = _track_splits(out)
    assert {tid: after[tid] for tid in before} == before
    assert sum(s == "valid" for s in after.values()) == 3  # round(0.25 × 12): two of the new tracks fill up
