"""Conditioning on source dataset, key and tempo: token names, the metadata → prefix mapping, the checkpoint
meta round trip (and old composer/density-only meta), old vocabularies unchanged, and the key/tempo a MIDI
file carries (read_midi_meta)."""

from __future__ import annotations

import numpy as np
import pytest
from symusic import KeySignature, Note, Score, Tempo, Track

from tunesmith.errors import UserError
from tunesmith.models.midi.conditioning import KEY_NAMES, Conditioner, parse_key
from tunesmith.models.midi.notes import read_midi_meta
from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer

ALL = MidiTokenizerConfig(
    conditioning=["tempo", "key", "dataset", "composer"],  # the prefix order is fixed, not the config's
    composers=["Chopin"],
    datasets=["MAESTRO", "pop909"],
    tempo_bins=[80.0, 120.0],
)


def names(tok, ids) -> list[str]:
    return [tok.vocab[i] for i in ids]


def test_parse_key() -> None:
    assert parse_key("C major") == 0 and parse_key("c") == 0
    assert parse_key("Eb major") == 3 and parse_key("E flat major") == 3
    assert parse_key("eb") == 3 and parse_key("D#") == 3
    assert parse_key("a minor") == 21 and parse_key("Am") == 21 and parse_key("c# minor") == 13
    assert parse_key("f sharp minor") == 18 and parse_key("Bb major") == 10 and parse_key("b minor") == 23
    assert parse_key("cb major") == 11  # enharmonic: B major
    for bad in (None, "", "h major", "minor", "c major 7"):
        assert parse_key(bad) is None
    assert len(KEY_NAMES) == 24 and KEY_NAMES[3] == "eb-major" and KEY_NAMES[12 + 9] == "a-minor"


def test_prefix_of_dataset_key_and_tempo() -> None:
    tok = build_tokenizer(ALL)
    cond = Conditioner.from_config(tok, ALL)
    assert cond.fields == ["composer", "dataset", "key", "tempo"]
    got = cond.prefix("Frédéric Chopin", dataset="maestro-v3.0.0", key="F# minor", tempo=130.0)
    assert names(tok, got) == ["Composer_chopin", "Dataset_maestro", "Key_gb-minor", "Tempo_2"]
    got = cond.prefix(None, dataset="lakh", key="nonsense", tempo=60.0)
    assert names(tok, got) == ["Composer_unknown", "Dataset_other", "Key_unknown", "Tempo_0"]
    assert names(tok, cond.prefix(tempo=80.0))[-1] == "Tempo_1"  # a bin edge opens the upper bin
    assert names(tok, cond.unconditional()) == ["Composer_unknown", "Dataset_unknown", "Key_unknown", "Tempo_unknown"]
    piece = {"composer": "Chopin", "note_count": 10, "duration": 5.0, "dataset": "POP909", "key": "c major"}
    assert names(tok, cond.piece_prefix(piece)) == ["Composer_chopin", "Dataset_pop909", "Key_c-major", "Tempo_unknown"]
    old_piece = {"composer": "", "note_count": 10, "duration": 5.0}  # prepared before these fields existed
    assert names(tok, cond.piece_prefix(old_piece)) == names(tok, cond.unconditional())
    # every token a prefix can hold is a special token of the vocabulary, once
    specials = [n for n in tok.vocab if n.split("_")[0] in ("Composer", "Dataset", "Key", "Tempo")]
    assert len(specials) == len(set(specials)) == 3 + 4 + 25 + 4
    with pytest.raises(UserError, match="unknown field"):
        build_tokenizer(MidiTokenizerConfig(conditioning=["mood"]))


def test_meta_round_trip_and_old_meta() -> None:
    tok = build_tokenizer(ALL)
    cond = Conditioner.from_config(tok, ALL)
    again = Conditioner.from_meta(tok, cond.meta())
    piece = {"composer": "x", "note_count": 3, "duration": 1.0, "dataset": "maestro", "key": "d minor", "tempo": 99}
    assert np.array_equal(again.piece_prefix(piece), cond.piece_prefix(piece))
    old_cfg = MidiTokenizerConfig(conditioning=["composer", "density"], composers=["Bach"])
    old_tok = build_tokenizer(old_cfg)
    old = Conditioner.from_meta(
        old_tok, {"fields": ["composer", "density"], "composers": ["Bach"], "density_bins": [2.0, 4.0]}
    )
    assert names(old_tok, old.prefix("Bach", 3.0)) == ["Composer_bach", "Density_1"]


def test_old_vocabularies_are_unchanged() -> None:
    """A composer/density setup has the tokens it had before dataset/key/tempo existed (same ids)."""
    tok = build_tokenizer(MidiTokenizerConfig(conditioning=["composer", "density"], composers=["Bach", "Chopin"]))
    tail = tok.vocab[tok.vocab.index("Composer_bach") :]
    assert tail[:9] == [
        "Composer_bach",
        "Composer_chopin",
        "Composer_other",
        "Composer_unknown",
        "Density_0",
        "Density_1",
        "Density_2",
        "Density_3",
        "Density_4",
    ]
    plain = build_tokenizer(MidiTokenizerConfig())
    assert not any(n.startswith(("Dataset_", "Key_", "Tempo_")) for n in plain.vocab)


def write_score(path, *, key: tuple[int, int] | None, qpm: float | None) -> None:
    score = Score(480)
    if qpm is not None:
        score.tempos.append(Tempo(0, qpm=qpm))
    if key is not None:
        score.key_signatures.append(KeySignature(0, key[0], key[1]))
    track = Track("piano", 0, False)
    track.notes.append(Note(0, 480, 60, 80))
    score.tracks.append(track)
    score.dump_midi(str(path))


@pytest.mark.parametrize(
    ("key", "expected"),
    [((0, 0), "c major"), ((-3, 0), "eb major"), ((-3, 1), "c minor"), ((3, 1), "gb minor"), ((2, 0), "d major")],
)
def test_read_midi_meta(tmp_path, key, expected) -> None:
    path = tmp_path / "k.mid"
    write_score(path, key=key, qpm=90.0)
    meta = read_midi_meta(path)
    assert meta["key"] == expected and meta["tempo"] == pytest.approx(90.0, abs=0.01)
    assert parse_key(meta["key"]) is not None


def test_read_midi_meta_without_key_or_tempo(tmp_path) -> None:
    path = tmp_path / "plain.mid"
    write_score(path, key=None, qpm=None)
    assert read_midi_meta(path) == {"key": "", "tempo": 0.0}
    with pytest.raises(UserError, match="not a readable MIDI"):
        read_midi_meta(b"not a midi file")
