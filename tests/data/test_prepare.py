"""prepare_dataset on folders and synthetic data: segments, manifests, sidecars, splits, idempotence, settings."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from support.audio import write_m4a, write_tone
from tunesmith.data.manifest import MUSIC_FIELDS, read_dataset_json, read_info, read_manifest, resolve_path
from tunesmith.data.prepare import prepare_dataset
from tunesmith.data.prepare.split import split_number
from tunesmith.data.sources import Track
from tunesmith.errors import UserError

SR = 16000


def _prep(sources, out, **kw):
    kw.setdefault("sample_rate", SR)
    kw.setdefault("segment", 2.0)
    kw.setdefault("min_segment", 1.0)
    kw.setdefault("progress", False)
    return prepare_dataset(sources, out, **kw)


def _all_entries(out):
    return {s: read_manifest(out, s) for s in ("train", "valid")}


def _manifest_bytes(out):
    return {s: (out / "egs" / s / "data.jsonl").read_bytes() for s in ("train", "valid")}


@pytest.fixture
def music(tmp_path):
    root = tmp_path / "my music"
    write_tone(root / "rock" / "riff one.wav", 5.0, 44100, channels=2)  # 2+2+1 s → 3 segments
    write_tone(root / "rock" / "riff two.flac", 3.5, 22050)  # 2 + 1.5 s → 2 segments
    write_tone(root / "jazz" / "späte Nacht — ü.mp3", 4.4, 44100)  # unicode, spaces → 2 segments (+0.4 dropped)
    write_tone(root / "captioned.ogg", 2.0, 48000)
    (root / "captioned.txt").write_text("  warm lo-fi piano\nwith vinyl crackle ", encoding="utf-8")
    write_m4a(root / "tagged.m4a", 2.0)
    (root / "tagged.json").write_text(json.dumps({"genre": "Techno", "bpm": "128", "moods": "dark, driving"}))
    return root


def test_folder_source_segments_and_metadata(music, tmp_path):
    out = tmp_path / "out"
    summary = _prep([music], out)
    assert summary["counts"]["tracks"]["total"] == 5 and summary["counts"]["rejected"] == 0
    entries = [e for es in _all_entries(out).values() for e in es]
    assert len(entries) == 3 + 2 + 2 + 1 + 1 == summary["counts"]["segments"]["total"]
    by_track: dict[str, list] = {}
    for e in entries:
        info = read_info(out, e)
        by_track.setdefault(info["track_id"], []).append((e, info))
        data, sr = sf.read(str(resolve_path(out, e)), always_2d=True)
        assert sr == SR == e.sample_rate and data.shape[1] == 1
        assert abs(data.shape[0] / SR - e.duration) < 1e-9 and 1.0 <= e.duration <= 2.0
        assert e.amplitude == pytest.approx(np.abs(data).max(), abs=1e-3)
        assert set(MUSIC_FIELDS) <= set(json.loads(resolve_path(out, e).with_suffix(".json").read_text()))
    infos = {tid.split("/", 1)[1]: [i for _, i in items] for tid, items in by_track.items()}
    assert [i["start"] for i in infos["rock/riff one.wav"]] == [0.0, 2.0, 4.0]
    assert infos["rock/riff one.wav"][0]["genre"] == "rock" and infos["rock/riff one.wav"][0]["description"] == "rock"
    assert infos["jazz/späte Nacht — ü.mp3"][0]["genre"] == "jazz"
    assert infos["captioned.ogg"][0]["description"] == "warm lo-fi piano with vinyl crackle"
    tagged = infos["tagged.m4a"][0]
    assert tagged["genre"] == "Techno" and tagged["bpm"] == 128.0 and tagged["moods"] == ["dark", "driving"]
    assert tagged["description"] == "Techno, dark, driving, 128 bpm"
    assert summary["caption_coverage"] == 1.0
    assert read_dataset_json(out)["hours"]["total"] == pytest.approx(sum(e.duration for e in entries) / 3600, abs=1e-6)


def test_resample_content_matches_reference(tmp_path):
    """A 1 kHz stereo tone at 44.1 kHz comes out as a 1 kHz mono tone at 16 kHz."""
    src = write_tone(tmp_path / "in" / "a.wav", 2.0, 44100, freq=1000.0, channels=1, subtype="FLOAT")
    out = tmp_path / "out"
    _prep([src], out, valid_fraction=0.0)
    (entry,) = read_manifest(out, "train")
    data, _ = sf.read(str(resolve_path(out, entry)))
    t = np.arange(len(data)) / SR
    ref = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    assert np.abs(data[200:-200] - ref[200:-200]).max() < 2e-3


def test_synthetic_dataset_for_other_helpers(tmp_path):
    out = tmp_path / "syn"
    summary = prepare_dataset(
        [], out, source="synthetic", num_tracks=10, track_duration=3.0, sample_rate=SR, segment=1.5, progress=False
    )
    assert summary["counts"]["tracks"] == {"train": 9, "valid": 1, "total": 10}
    assert summary["counts"]["segments"]["total"] == 20 and summary["caption_coverage"] == 1.0
    assert len(summary["genres"]) == 6
    valid = read_manifest(out, "valid")
    assert len(valid) == 2 and all(e.duration == 1.5 for e in valid)
    meta = read_info(out, valid[0])
    assert meta["bpm"] and meta["key"] and meta["genre"] and meta["instrument"]


def test_flac_format_and_stereo(music, tmp_path):
    out = tmp_path / "out"
    _prep([music / "rock"], out, format="flac", channels=2, valid_fraction=0.0)
    entries = read_manifest(out, "train")
    assert entries and all(e.path.endswith(".flac") for e in entries)
    info = sf.info(str(resolve_path(out, entries[0])))
    assert info.format == "FLAC" and info.channels == 2


def test_split_by_track_deterministic_and_stable(tmp_path):
    src = tmp_path / "src"
    for i in range(30):
        write_tone(src / f"t{i:02d}.wav", 4.0, 8000, freq=200 + 10 * i)
    out = tmp_path / "out"
    _prep([src], out, sample_rate=8000, valid_fraction=0.3)
    first = {read_info(out, e)["track_id"]: s for s, es in _all_entries(out).items() for e in es}
    per_track: dict[str, set] = {}
    for s, es in _all_entries(out).items():
        for e in es:
            per_track.setdefault(read_info(out, e)["track_id"], set()).add(s)
    assert all(len(splits) == 1 for splits in per_track.values())  # never split within a track
    # a small dataset gets the fraction asked for: the round(0.3 × 30) = 9 tracks of lowest hash
    by_hash = sorted(first, key=lambda tid: split_number(Track(tid, "folder", "x"), 0))
    assert {tid for tid, s in first.items() if s == "valid"} == set(by_hash[:9])
    for i in range(30, 40):
        write_tone(src / f"t{i:02d}.wav", 4.0, 8000, freq=200 + 10 * i)
    summary = _prep([src], out, sample_rate=8000, valid_fraction=0.3)
    assert summary["run"]["processed"] == 10 and summary["run"]["skipped_already_done"] == 30
    after = {read_info(out, e)["track_id"]: s for s, es in _all_entries(out).items() for e in es}
    assert {tid: after[tid] for tid in first} == first and len(after) == 40


def test_rerun_does_nothing_and_changes_nothing(music, tmp_path):
    out = tmp_path / "out"
    _prep([music], out)
    before = _manifest_bytes(out)
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "state" not in p.parts}
    summary = _prep([music], out, workers=2)  # workers does not change the output
    assert summary["run"] == {**summary["run"], "processed": 0, "rejected": 0, "skipped_already_done": 5}
    assert _manifest_bytes(out) == before
    assert {p: p.stat().st_mtime_ns for p in files} == files


def test_changed_input_file_is_redone(music, tmp_path):
    out = tmp_path / "out"
    _prep([music], out)
    write_tone(music / "rock" / "riff two.flac", 6.0, 22050)
    summary = _prep([music], out)
    assert summary["run"]["processed"] == 1
    segs = [e for e in read_manifest(out, "train") + read_manifest(out, "valid") if "riff_two" in e.path]
    assert len(segs) == 3


@pytest.mark.parametrize(
    ("change", "flag"),
    [({"sample_rate": 8000}, "--sample-rate 16000"), ({"segment": 3.0}, "--segment 2.0"), ({"seed": 1}, "--seed 0")],
)
def test_changed_settings_are_refused(music, tmp_path, change, flag):
    out = tmp_path / "out"
    _prep([music / "jazz"], out)
    with pytest.raises(UserError, match="would change the output") as err:
        _prep([music / "jazz"], out, **change)
    assert flag in str(err.value) and "new --out" in str(err.value)


def test_workers_give_the_same_dataset(music, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _prep([music], one, workers=1)
    _prep([music], two, workers=2)
    for split in ("train", "valid"):
        a = [(os.path.relpath(e.path, one), e.duration, e.amplitude) for e in read_manifest(one, split)]
        b = [(os.path.relpath(e.path, two), e.duration, e.amplitude) for e in read_manifest(two, split)]
        assert a == b
        for e in read_manifest(one, split):
            rel = os.path.relpath(e.path, one)
            assert (one / rel).read_bytes() == (two / rel).read_bytes()


def test_out_folder_must_be_new_or_a_dataset(music, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        _prep([music], out)


def test_out_inside_source_is_not_scanned(music):
    out = music / "prepared"
    _prep([music], out)
    summary = _prep([music], out)
    assert summary["counts"]["tracks"]["total"] == 5 and summary["counts"]["rejected"] == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": "napster"}, "unknown --source"),
        ({"format": "mp3"}, "wav or flac"),
        ({"sample_rate": 10}, "--sample-rate"),
        ({"valid_fraction": 1.5}, "--valid-fraction"),
        ({"workers": 0}, "--workers"),
        ({"channels": 5}, "--channels"),
    ],
)
def test_bad_arguments(music, tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        _prep([music], tmp_path / "out", **kwargs)


def test_synthetic_argument_errors(tmp_path):
    with pytest.raises(UserError, match="--num-tracks"):
        prepare_dataset([], tmp_path / "a", source="synthetic")
    with pytest.raises(UserError, match="no SOURCE"):
        prepare_dataset([], tmp_path / "b")
    with pytest.raises(UserError, match="takes no SOURCE"):
        prepare_dataset([tmp_path], tmp_path / "c", source="synthetic", num_tracks=2)


def test_cli_prepare_and_json(music, tmp_path, capsys):
    from tunesmith.cli import main

    out = tmp_path / "cli"
    assert main(["prepare", str(music), "--out", str(out), "--sample-rate", "16000", "--segment", "2"]) == 0
    assert "5 tracks" in capsys.readouterr().out
    assert main(["prepare", str(music), "--out", str(out), "--sample-rate", "16000", "--segment", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run"]["skipped_already_done"] == 5
    assert main(["prepare", str(music), "--out", str(out), "--sample-rate", "8000"]) == 2
    assert "would change the output" in capsys.readouterr().err


def test_progress_only_on_a_terminal(monkeypatch):
    import sys

    from tunesmith.data import prepare

    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.setenv("TUNESMITH_NO_PROGRESS", "0")
    assert prepare.progress_enabled(True) and not prepare.progress_enabled(False)
    monkeypatch.setenv("TUNESMITH_NO_PROGRESS", "1")
    assert not prepare.progress_enabled(True)
    monkeypatch.delenv("TUNESMITH_NO_PROGRESS")
    monkeypatch.setattr(sys, "stderr", object.__new__(type("Pipe", (), {"isatty": lambda self: False})))
    assert not prepare.progress_enabled(True)


def test_empty_valid_split_is_warned(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        prepare_dataset([], tmp_path / "s", source="synthetic", num_tracks=3, track_duration=1.0, segment=1.0,
                        sample_rate=8000, progress=False)  # fmt: skip
    assert "valid split is empty" in caplog.text


def _crash_on_named(track: dict, settings: dict, out: str) -> dict:
    """Worker function for the crash test: dies like a segfaulting decoder on files named 'crash*'."""
    from tunesmith.data.prepare import process_track

    if track["name"].startswith("crash"):
        os._exit(3)
    return process_track(track, settings, out)


def test_a_worker_crash_rejects_only_the_culprit(tmp_path):
    from tunesmith.data.prepare import run_tracks
    from tunesmith.data.sources import scan_folder

    src = tmp_path / "src"
    for name in ("a", "b", "crash", "c", "d", "e"):
        write_tone(src / f"{name}.wav", 1.0, 8000)
    tracks = scan_folder(src).tracks
    records: list[dict] = []
    settings = {"sample_rate": 8000, "channels": 1, "segment": 1.0, "min_segment": 0.5, "valid_fraction": 0.0}
    settings.update(seed=0, format="wav", silence_db=-60.0, track_duration=None)
    run_tracks(tracks, settings, tmp_path / "out", 2, records.append, fn=_crash_on_named)
    status = {r["track_id"].rsplit("/", 1)[-1]: r["status"] for r in records}
    assert len(records) == 6 and status.pop("crash.wav") == "rejected"
    assert set(status.values()) == {"done"}
    (crash,) = [r for r in records if r["status"] == "rejected"]
    assert "crashed the worker" in crash["reason"]
