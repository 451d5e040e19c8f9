"""`prepare --max-tracks` (deterministic, stable when files are added) and `--include/--exclude` filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.audio import fma_row, make_fma, write_tone
from tunesmith.data.prepare import prepare_dataset
from tunesmith.data.sources import Track
from tunesmith.data.subset import choose_subset, filter_tracks, parse_filters, subset_rank
from tunesmith.errors import UserError


def _tracks(ids: list[str]) -> list[Track]:
    return [
        Track(f"folder:lib/{i}", "folder", i, None, {"genre": "Rock" if n % 2 else "Jazz"}) for n, i in enumerate(ids)
    ]


def test_max_tracks_is_the_lowest_hashes_whatever_the_order():
    tracks = _tracks([f"t{i:03d}.wav" for i in range(50)])
    chosen = choose_subset(tracks, 10, seed=7)
    expected = sorted(tracks, key=lambda t: subset_rank(t.track_id, 7))[:10]  # the reference rule, spelled out
    assert {t.track_id for t in chosen} == {t.track_id for t in expected}
    assert [t.track_id for t in choose_subset(list(reversed(tracks)), 10, seed=7)] == [
        t.track_id for t in reversed(chosen)
    ]
    other_seed = {t.track_id for t in choose_subset(tracks, 10, seed=8)}
    assert other_seed != {t.track_id for t in chosen}


def test_adding_files_never_reshuffles_the_old_choice():
    old = _tracks([f"a{i:03d}.wav" for i in range(40)])
    new = _tracks([f"b{i:03d}.wav" for i in range(40)])
    before = {t.track_id for t in choose_subset(old, 12, seed=1)}
    after = {t.track_id for t in choose_subset(old + new, 12, seed=1)}
    old_ids = {t.track_id for t in old}
    displaced = before - after
    entered_new = after - old_ids
    assert after & old_ids <= before  # no old track that was out comes in
    assert len(displaced) == len(entered_new)  # an old track leaves only for a new, lower-ranked one
    # with the prepared ones kept first, the old choice stays whole
    kept = {t.track_id for t in choose_subset(old + new, 12, seed=1, keep=before)}
    assert kept == before


def test_filters_paths_and_metadata():
    tracks = [
        Track("folder:lib/rock/a.wav", "folder", "a", "/x/lib/rock/a.wav", {"genre": "Rock", "moods": ["calm"]}),
        Track("folder:lib/rock/b.flac", "folder", "b", "/x/lib/rock/b.flac", {"genre": "Rock", "moods": ["dark"]}),
        Track("folder:lib/jazz/c.wav", "folder", "c", "/x/lib/jazz/c.wav", {"genre": "Jazz", "extra": {"era": "50s"}}),
    ]
    roots = [Path("/x/lib")]

    def names(include=None, exclude=None):
        return [t.name for t in filter_tracks(tracks, roots, parse_filters(include, exclude))]

    assert names(["rock/*"]) == ["a", "b"]
    assert names(["genre=rock"]) == ["a", "b"]  # case-insensitive on metadata
    assert names(["moods=ca*"]) == ["a"]  # a list field matches by item
    assert names(["era=50s"]) == ["c"]  # extra columns too
    assert names(["genre=Rock", "*.wav"]) == ["a"]  # different keys: all must hold
    assert names(["genre=Rock", "genre=Jazz"]) == ["a", "b", "c"]  # same key: any
    assert names(exclude=["*.flac"]) == ["a", "c"]
    assert names(["genre=Rock"], ["moods=dark"]) == ["a"]
    with pytest.raises(UserError):
        parse_filters(["genre="], None)


def _fma_source(root: Path, ids: list[int]) -> Path:
    genres = {0: ("Rock", "[12]"), 1: ("Electronic", "[15]")}
    rows = [fma_row(tid, f"T{tid}", "A", *genres[i % 2], "[]") for i, tid in enumerate(ids)]
    return make_fma(root, rows, ids, seconds=1.0)


def _prepared_ids(out: Path) -> set[str]:
    ids = set()
    for split in ("train", "valid"):
        path = out / "egs" / split / "data.jsonl"
        if path.is_file():
            for line in path.read_text().splitlines():
                seg = json.loads(line)
                sidecar = out / Path(seg["path"]).with_suffix(".json")
                ids.add(json.loads(sidecar.read_text())["track_id"])
    return ids


def test_prepare_max_tracks_and_genre_filter_on_fma(tmp_path):
    src = _fma_source(tmp_path / "fma", [2, 3, 5, 7, 11, 13])
    opts = dict(sample_rate=8000, segment=0.5, min_segment=0.25, progress=False, seed=4)
    a = prepare_dataset([src], tmp_path / "a", max_tracks=3, **opts)
    prepare_dataset([src], tmp_path / "b", max_tracks=3, **opts)
    assert a["counts"]["tracks"]["total"] == 3 and a["run"]["not_chosen"] == 3
    assert _prepared_ids(tmp_path / "a") == _prepared_ids(tmp_path / "b")
    rock = prepare_dataset([src], tmp_path / "rock", include=["genre=Rock"], **opts)
    assert _prepared_ids(tmp_path / "rock") == {"fma:2", "fma:5", "fma:11"}
    assert rock["run"]["not_chosen"] == 3
    some = prepare_dataset([src], tmp_path / "some", exclude=["fma_small/000/000002.mp3", "genre=Electronic"], **opts)
    assert _prepared_ids(tmp_path / "some") == {"fma:5", "fma:11"} and some["counts"]["tracks"]["total"] == 2


def test_prepare_max_tracks_keeps_prepared_tracks_when_files_are_added(tmp_path):
    src = tmp_path / "lib"
    for i in range(6):
        write_tone(src / f"a{i}.wav", 0.5, 8000, 200 + 30 * i)
    opts = dict(sample_rate=8000, segment=0.5, min_segment=0.25, progress=False, max_tracks=3)
    prepare_dataset([src], tmp_path / "out", **opts)
    first = _prepared_ids(tmp_path / "out")
    for i in range(6):
        write_tone(src / f"b{i}.wav", 0.5, 8000, 500 + 30 * i)
    again = prepare_dataset([src], tmp_path / "out", **opts)
    assert _prepared_ids(tmp_path / "out") == first and again["run"]["processed"] == 0
    fresh = prepare_dataset([src], tmp_path / "fresh", **opts)  # from scratch: the lowest hashes of all 12
    assert fresh["counts"]["tracks"]["total"] == 3
