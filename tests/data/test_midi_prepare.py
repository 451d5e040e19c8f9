"""prepare-midi: MAESTRO CSV splits, rejected files, accent-robust filters, hash splits, resume, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunesmith.cli import main
from tunesmith.data.midi_prepare import (
    MidiNotesStore,
    PrepareSettings,
    mentions_split,
    normalize_text,
    parse_filter,
    prepare_midi,
)
from tunesmith.errors import UserError
from tunesmith.models.midi.notes import read_midi
from tunesmith.models.midi.synthetic import make_fake_maestro, make_midi_folder


@pytest.fixture(scope="module")
def maestro(tmp_path_factory):
    root = tmp_path_factory.mktemp("maestro")
    make_fake_maestro(root / "src", pieces_per_composer=4, seconds=6.0)
    prepare_midi(root / "src", root / "out")
    return root


def test_maestro_splits_metadata_and_notes(maestro) -> None:
    store = MidiNotesStore(maestro / "out")
    assert len(store) == 12
    assert store.summary["splits"] == {"train": 6, "test": 3, "valid": 3}
    assert store.summary["split_rule"] == "csv:maestro-v3.0.0.csv"
    chopin = [p for p in store.pieces if p["composer"] == "Frédéric Chopin"]
    assert [p["split"] for p in chopin] == ["train", "train", "test", "valid"]
    # stored notes equal a direct read of the source file (float32 times)
    piece = chopin[0]
    direct = read_midi(maestro / "src" / piece["path"], sustain="apply")
    stored = store.notes(piece["id"])
    np.testing.assert_array_equal(stored.pitch, direct.pitch)
    np.testing.assert_array_equal(stored.velocity, direct.velocity)
    np.testing.assert_allclose(stored.start, direct.start, atol=1e-5)
    np.testing.assert_allclose(stored.end, direct.end, atol=1e-5)
    np.testing.assert_allclose(stored.pedals, direct.pedals, atol=1e-5)
    assert len(stored.pedals) > 0  # the synthetic Chopin uses the pedal


def test_rejected_files_are_listed(maestro) -> None:
    lines = (maestro / "out" / "rejected.jsonl").read_text().splitlines()
    rejected = {json.loads(line)["path"]: json.loads(line)["reason"] for line in lines}
    assert set(rejected) == {"2009/corrupt.midi", "2009/empty.midi"}
    assert "not a readable MIDI file" in rejected["2009/corrupt.midi"]
    assert rejected["2009/empty.midi"] == "no notes"


def test_filters_match_names_without_accents(maestro) -> None:
    store = MidiNotesStore(maestro / "out")
    composer = {p["id"]: p["composer"] for p in store.pieces}
    for where in ("composer~Chopin", "composer~frederic", "composer~FRÉDÉRIC  chopin", "composer=frédéric chopin"):
        ids = store.select("valid", where)
        assert [composer[i] for i in ids] == ["Frédéric Chopin"], where
    assert len(store.select(None, "composer~Bach")) == 4
    assert len(store.select(None, "composer~Bach|Mozart & split=validation")) == 2
    assert len(store.select("train", "composer!~bach")) == 4
    assert len(store.select(None, "composer!=Johann Sebastian Bach & split!=train")) == 4
    assert normalize_text("  Frédéric\tCHOPIN ") == "frederic chopin"
    assert mentions_split("composer~x & split=test") and not mentions_split("composer~split")
    with pytest.raises(UserError, match="unknown field 'composr'"):
        parse_filter("composr~Bach")
    with pytest.raises(UserError, match="cannot read clause"):
        parse_filter("composer Bach")


def test_hash_splits_are_deterministic_by_piece(tmp_path) -> None:
    make_midi_folder(tmp_path / "src", pieces=12, seconds=2.0)
    settings = PrepareSettings(valid_fraction=0.25, test_fraction=0.0)
    a = prepare_midi(tmp_path / "src", tmp_path / "a", settings=settings)
    b = prepare_midi(tmp_path / "src", tmp_path / "b", settings=settings)
    assert a["split_rule"] == "hash" and a["splits"] == b["splits"]
    sa = {p["path"]: p["split"] for p in MidiNotesStore(tmp_path / "a").pieces}
    sb = {p["path"]: p["split"] for p in MidiNotesStore(tmp_path / "b").pieces}
    assert sa == sb and set(sa.values()) == {"train", "valid"}
    assert all(path.startswith("set") for path in sa)  # nested folders are scanned


def test_small_folder_still_gets_a_valid_piece(tmp_path) -> None:
    make_midi_folder(tmp_path / "src", pieces=2, seconds=1.0)
    summary = prepare_midi(tmp_path / "src", tmp_path / "out", settings=PrepareSettings(valid_fraction=0.01))
    assert summary["splits"] == {"train": 1, "valid": 1}


class Killed(Exception):
    pass


def test_resume_refuse_and_force(tmp_path, monkeypatch) -> None:
    import tunesmith.data.midi_prepare as mp

    make_midi_folder(tmp_path / "src", pieces=4, seconds=1.0)
    calls = []
    kill_at = [3]
    real_parse = mp._parse

    def counting_parse(file, sustain):
        calls.append(file.rel)
        if len(calls) == kill_at[0]:
            kill_at[0] = 0
            raise Killed  # killed while reading the third file
        return real_parse(file, sustain)

    monkeypatch.setattr(mp, "_parse", counting_parse)
    with pytest.raises(Killed):
        prepare_midi(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out" / "midi_dataset.json").exists()
    calls.clear()
    summary = prepare_midi(tmp_path / "src", tmp_path / "out")
    assert len(calls) == 2 and summary["pieces"] == 4  # the first two files were not read again
    assert not (tmp_path / "out" / ".parts").exists()
    calls.clear()
    assert prepare_midi(tmp_path / "src", tmp_path / "out")["pieces"] == 4 and not calls  # already done
    with pytest.raises(UserError, match="sustain"):
        prepare_midi(tmp_path / "src", tmp_path / "out", settings=PrepareSettings(sustain="events"))
    forced = prepare_midi(tmp_path / "src", tmp_path / "out", settings=PrepareSettings(sustain="events"), force=True)
    assert forced["sustain"] == "events" and len(calls) == 4


def test_bad_sources_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="no such"):
        prepare_midi(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no MIDI files"):
        prepare_midi(tmp_path / "empty", tmp_path / "out")
    bad_csv = tmp_path / "csvsrc"
    bad_csv.mkdir()
    (bad_csv / "meta.csv").write_text("midi_filename,split\na.mid,train\n")
    with pytest.raises(UserError, match="canonical_composer"):
        prepare_midi(bad_csv, tmp_path / "out2")
    with pytest.raises(UserError, match="not a prepared MIDI dataset"):
        MidiNotesStore(tmp_path / "empty")


def test_cli(tmp_path, capsys) -> None:
    make_fake_maestro(tmp_path / "src", pieces_per_composer=2, seconds=2.0)
    assert main(["prepare-midi", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pieces"] == 6 and summary["rejected"] == 2
    assert main(["prepare-midi", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_duplicates_durations_and_filter_are_reported(tmp_path, caplog) -> None:
    import csv
    import logging

    make_fake_maestro(tmp_path / "src", pieces_per_composer=2, seconds=3.0, corrupt=False)
    csv_path = tmp_path / "src" / "maestro-v3.0.0.csv"
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows[1]["duration"] = str(float(rows[1]["duration"]) + 30.0)  # the CSV is wrong by 30 s
    duplicate = dict(rows[0], canonical_title="Again")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, duplicate])
    with caplog.at_level(logging.WARNING, logger="tunesmith.prepare_midi"):
        summary = prepare_midi(tmp_path / "src", tmp_path / "out")
    assert summary["pieces"] == 6 and summary["duration_mismatches"] == 1
    assert "duplicate of line 2" in caplog.text and "s in the CSV, 3.2 s in the file" in caplog.text
    assert rows[1]["midi_filename"] in caplog.text
    store = MidiNotesStore(tmp_path / "out")
    assert [p["title"] for p in store.pieces].count("Again") == 0  # the first row is kept
    second = store.pieces[1]
    assert second["duration"] == pytest.approx(float(store.notes(1).end.max()), abs=1e-3)  # the file's duration
    rejected = (tmp_path / "out" / "rejected.jsonl").read_text()
    assert "duplicate of line 2" in rejected

    chopin = prepare_midi(tmp_path / "src", tmp_path / "chopin", settings=PrepareSettings(filter="composer~chopin"))
    assert chopin["pieces"] == 2 and chopin["filter"] == "composer~chopin"
    assert {p["composer"] for p in MidiNotesStore(tmp_path / "chopin").pieces} == {"Frédéric Chopin"}
    with pytest.raises(UserError, match="other settings"):  # a different filter is a different preparation
        prepare_midi(tmp_path / "src", tmp_path / "chopin", settings=PrepareSettings(filter="composer~bach"))
    with pytest.raises(UserError, match="matches none"):
        prepare_midi(tmp_path / "src", tmp_path / "none", settings=PrepareSettings(filter="composer~liszt"))
    with pytest.raises(UserError, match="unknown field"):
        prepare_midi(tmp_path / "src", tmp_path / "bad", settings=PrepareSettings(filter="genre=jazz"))
    args = ["prepare-midi", str(tmp_path / "src"), "--out", str(tmp_path / "cli"), "--filter", "split=train", "--json"]
    assert main(args) == 0
    assert MidiNotesStore(tmp_path / "cli").splits() == ["train"]
