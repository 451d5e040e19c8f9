"""MIDI eval-split configuration: one entry overridden keeps the preset's others; splits from any split."""

from __future__ import annotations

import logging

import pytest

from tunesmith.config import resolve
from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
from tunesmith.models.midi.synthetic import make_fake_maestro
from tunesmith.tasks.midi import MidiConfig
from tunesmith.tasks.midi_metrics import eval_split_ids


def test_overriding_one_eval_split_keeps_the_others() -> None:
    preset = resolve("midi", MidiConfig, "tiny").data["eval_splits"]
    assert set(preset) == {"bach", "chopin", "mozart"}
    one = resolve("midi", MidiConfig, "tiny", ["eval_splits.liszt=composer~Liszt", "eval_splits.bach=composer~JS"])
    assert one.data["eval_splits"] == {**preset, "liszt": "composer~Liszt", "bach": "composer~JS"}
    assert set(one.delta()) == {"eval_splits.liszt", "eval_splits.bach"}
    # assigning the whole mapping still replaces it (and {} still turns the named splits off)
    assert resolve("midi", MidiConfig, "tiny", ["eval_splits={x: split=test}"]).data["eval_splits"] == {
        "x": "split=test"
    }
    assert resolve("midi", MidiConfig, "tiny", ["eval_splits={}"]).data["eval_splits"] == {}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> MidiNotesStore:
    root = tmp_path_factory.mktemp("splits")
    make_fake_maestro(root / "src", pieces_per_composer=4, seconds=2.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    return MidiNotesStore(root / "data")


def test_eval_splits_draw_from_the_base_split_any_split_or_their_own(store, caplog) -> None:
    splits = {"chopin": "composer~chopin", "chopin_test": "composer~chopin&split=test", "liszt": "composer~liszt"}
    by_id = {p["id"]: p for p in store.pieces}
    with caplog.at_level(logging.WARNING):
        valid_only = eval_split_ids(store, splits, "valid", log=logging.getLogger("t"))
    assert "eval_splits.liszt" in caplog.text and "liszt" not in valid_only
    assert [by_id[i]["split"] for i in valid_only["chopin"]] == ["valid"]
    assert [by_id[i]["split"] for i in valid_only["chopin_test"]] == ["test"]
    assert valid_only["valid"] == store.select("valid")
    everywhere = eval_split_ids(store, splits, "all")
    assert sorted(by_id[i]["split"] for i in everywhere["chopin"]) == ["test", "train", "train", "valid"]
    from_test = eval_split_ids(store, {"bach": "composer~bach"}, "test")
    assert [by_id[i]["split"] for i in from_test["bach"]] == ["test"]
