"""FMA, MTG-Jamendo and LJSpeech layouts (tiny fixtures built here), auto-detection and metadata errors."""

from __future__ import annotations

import json
import shutil

import pytest

from support.audio import fma_row, make_fma, make_jamendo, make_ljspeech, write_tone
from tunesmith.data.manifest import read_info, read_manifest
from tunesmith.data.prepare import prepare_dataset
from tunesmith.data.sources import detect_kind
from tunesmith.errors import UserError

KW = {"sample_rate": 16000, "segment": 2.0, "min_segment": 1.0, "progress": False, "valid_fraction": 0.0}


def _infos(out) -> dict[str, dict]:
    return {read_info(out, e)["track_id"]: read_info(out, e) for e in read_manifest(out, "train")}


def _rejected(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def fma(tmp_path):
    rows = [
        fma_row(2, "Food", "AWOL", "Hip-Hop", "[21]", "['lofi', 'boom bap']"),
        fma_row(1001, "Loud, Louder", "Band, The", "Rock", "[12, 25]", "[]"),
        fma_row(1002, "Drift", "Ümlaut Artist", "Electronic", "[15, 236]", "['ambient', 'night']"),
        fma_row(1003, "Broken", "X", "Rock", "[12", "[]"),  # malformed genres list
        ["abc", "x"],  # malformed row: no track id
        fma_row(5000, "Not downloaded", "Y", "Pop", "[10]", "[]"),  # in metadata, audio not present
    ]
    return make_fma(tmp_path / "fma", rows, audio_ids=[2, 1001, 1002, 1003, 4242], seconds=3.0)


def test_fma(fma, tmp_path):
    assert detect_kind(fma) == "fma" and detect_kind(fma / "fma_small") == "fma"
    out = tmp_path / "out"
    summary = prepare_dataset([fma], out, **KW)
    infos = _infos(out)
    assert set(infos) == {"fma:2", "fma:1001", "fma:1002"}
    rock = infos["fma:1001"]
    assert rock["title"] == "Loud, Louder" and rock["artist"] == "Band, The" and rock["genre"] == "Rock"
    assert rock["keywords"] == ["Punk"] and rock["description"] == "Rock, Punk"
    elec = infos["fma:1002"]
    assert elec["keywords"] == ["Ambient Electronic", "ambient", "night"] and elec["artist"] == "Ümlaut Artist"
    assert infos["fma:2"]["keywords"] == ["lofi", "boom bap"]  # genre 21 unknown to genres.csv: skipped
    reasons = {r["file"].rsplit("/", 1)[-1]: r["reason"] for r in _rejected(out)}
    assert "not a list literal" in next(v for k, v in reasons.items() if k.startswith("tracks.csv:") and "[12" in v)
    assert any("track_id 'abc' is not a number" in v for v in reasons.values())
    assert "no row for track 4242" in reasons["004242.mp3"]
    assert summary["counts"]["metadata_rows_without_audio"] == 1
    # the audio folder alone finds the metadata beside it
    out2 = tmp_path / "out2"
    prepare_dataset([fma / "fma_small"], out2, **KW)
    assert set(_infos(out2)) == set(infos)


def test_fma_missing_metadata_files(fma, tmp_path):
    (fma / "fma_metadata" / "genres.csv").unlink()
    with pytest.raises(UserError, match="genres.csv"):
        prepare_dataset([fma], tmp_path / "a", **KW)
    shutil.rmtree(fma / "fma_metadata")
    with pytest.raises(UserError, match="fma_metadata/tracks.csv"):
        prepare_dataset([fma / "fma_small"], tmp_path / "b", source="fma", **KW)


def test_fma_bad_header(fma, tmp_path):
    (fma / "fma_metadata" / "tracks.csv").write_text("track_id,title\n1,x\n")
    with pytest.raises(UserError, match="3-row header|missing columns"):
        prepare_dataset([fma], tmp_path / "a", **KW)


@pytest.fixture
def jamendo(tmp_path):
    tsvs = {
        "autotagging_genre.tsv": [
            "track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---punkrock",
            "track_0000215\tartist_000014\talbum_000031\t15/215.mp3\t200.0\tgenre---pop\tgenre---rock",
            "track_0000999\tartist_000001\talbum_000001\t99/999.mp3\t100.0\tgenre---jazz",  # not downloaded
            "garbage line without tabs",
        ],
        "autotagging_instrument.tsv": [
            "track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tinstrument---guitar\tinstrument---drums"
        ],
        "autotagging_moodtheme.tsv": [
            "track_0000215\tartist_000014\talbum_000031\t15/215.mp3\t200.0\tmood/theme---happy",
            "track_0000216\tartist_000015\talbum_000032\t16/216.mp3\t90.0\tnonsense-tag",
        ],
    }
    audio = ["14/214.mp3", "15/215.low.mp3", "16/216.mp3", "17/stray.mp3"]
    return make_jamendo(tmp_path / "jamendo", tsvs, audio, seconds=3.0)


def test_jamendo(jamendo, tmp_path):
    assert detect_kind(jamendo) == "jamendo"
    out = tmp_path / "out"
    summary = prepare_dataset([jamendo], out, **KW)
    infos = _infos(out)
    assert set(infos) == {"jamendo:track_0000214", "jamendo:track_0000215"}
    a, b = infos["jamendo:track_0000214"], infos["jamendo:track_0000215"]
    assert a["genre"] == "punkrock" and a["instrument"] == "guitar, drums" and a["moods"] == []
    assert a["description"] == "punkrock, guitar, drums"
    assert b["genre"] == "pop" and b["keywords"] == ["rock"] and b["moods"] == ["happy"]
    assert b["description"] == "pop, rock, happy"
    reasons = [r["reason"] for r in _rejected(out)]
    assert any("malformed row" in r for r in reasons)
    assert any("malformed tag 'nonsense-tag'" in r for r in reasons)
    assert any("no row for this file" in r for r in reasons)  # 17/stray.mp3
    assert summary["counts"]["metadata_rows_without_audio"] == 1


def test_jamendo_bad_tsv(tmp_path):
    root = tmp_path / "j"
    root.mkdir()
    (root / "autotagging.tsv").write_text("ID\tWHAT\n1\t2\n")
    with pytest.raises(UserError, match="TRACK_ID"):
        prepare_dataset([root], tmp_path / "o", **KW)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no autotagging"):
        prepare_dataset([empty], tmp_path / "o2", source="jamendo", **KW)


@pytest.fixture
def ljspeech(tmp_path):
    lines = [
        "LJ001-0001|Printing, in the only sense with which we are at present concerned,|Printing, in the only sense",
        "LJ001-0002|In being comparatively modern.|",  # no normalized text: the text is used
        'LJ001-0003|Dr. Smith\'s 3 quotes "here"|Doctor Smith\'s three quotes "here"',
        "LJ001-0004|A sentence that runs for far too long|A sentence that runs for far too long",
        "LJ001-0005|Missing audio|Missing audio",
        "just one field",
    ]
    wavs = {"LJ001-0001": 1.5, "LJ001-0002": 0.7, "LJ001-0003": 1.2, "LJ001-0004": 3.0, "LJ001-9999": 1.0}
    return make_ljspeech(tmp_path / "LJSpeech-1.1", lines, wavs)


def test_ljspeech(ljspeech, tmp_path):
    assert detect_kind(ljspeech) == "ljspeech"
    out = tmp_path / "out"
    prepare_dataset([ljspeech], out, **KW)
    entries = read_manifest(out, "train")
    infos = {read_info(out, e)["track_id"]: (e, read_info(out, e)) for e in entries}
    assert set(infos) == {"ljspeech:LJ001-0001", "ljspeech:LJ001-0002", "ljspeech:LJ001-0003"}
    e1, i1 = infos["ljspeech:LJ001-0001"]
    assert e1.duration == pytest.approx(1.5) and i1["transcript"] == "Printing, in the only sense"
    assert i1["description"] == i1["transcript"] and i1["genre"] == "speech"
    e2, i2 = infos["ljspeech:LJ001-0002"]
    assert e2.duration == pytest.approx(0.7)  # shorter than --min-segment, kept whole: utterances are never cut
    assert i2["transcript"] == "In being comparatively modern."
    assert infos["ljspeech:LJ001-0003"][1]["transcript"] == 'Doctor Smith\'s three quotes "here"'
    reasons = " | ".join(r["reason"] for r in _rejected(out))
    assert "longer than --segment 2 s" in reasons and "audio file not found" in reasons
    assert "malformed row" in reasons and "no row for LJ001-9999" in reasons


def test_ljspeech_missing_metadata(tmp_path):
    (tmp_path / "lj" / "wavs").mkdir(parents=True)
    with pytest.raises(UserError, match="metadata.csv"):
        prepare_dataset([tmp_path / "lj"], tmp_path / "out", source="ljspeech", **KW)


def test_several_sources_of_different_kinds(fma, ljspeech, tmp_path):
    folder = tmp_path / "mine"
    write_tone(folder / "a.wav", 2.0, 16000)
    out = tmp_path / "out"
    summary = prepare_dataset([fma, ljspeech, folder], out, **KW)
    assert summary["source_kinds"] == {"fma": 3, "folder": 1, "ljspeech": 4}  # tracks found per kind
