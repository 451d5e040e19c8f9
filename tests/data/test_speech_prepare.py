"""``tunesmith prepare`` on transcribed speech (espeak-ng clips with known transcripts): the folder layout with
``--speech`` and the LJSpeech layout, speakers, NFC transcripts, skipped clips (no transcript, too long) and
resampling to 24 kHz."""

from __future__ import annotations

import json
import logging
import unicodedata
from math import gcd

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from support.speech import Speaker, make_speech_folder, requires_espeak, synthesize
from tunesmith.cli import main
from tunesmith.data.manifest import read_info, read_manifest, resolve_path
from tunesmith.data.prepare import prepare_dataset
from tunesmith.errors import UserError

pytestmark = requires_espeak

SR = 24000
KW = {"sample_rate": SR, "progress": False, "valid_fraction": 0.0}
SPEAKERS = (Speaker("anna", "en-us", pitch=80), Speaker("bert", "en-gb", pitch=20))
SENTENCES = ("The cat sat on the mat.", "Hello world, once again.")


def _segments(out) -> dict[str, tuple]:
    """clip name (file stem / LJSpeech id) → (manifest entry, sidecar info, audio float32 [T])."""
    found = {}
    for entry in read_manifest(out, "train"):
        info = read_info(out, entry)
        wav, rate = sf.read(str(resolve_path(out, entry)), dtype="float32")
        assert rate == SR
        found[info["name"] if info["source"] == "ljspeech" else info["title"]] = (entry, info, wav)
    return found


def _rejected(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]


def _snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    n = min(len(reference), len(test))
    ref, err = reference[:n], test[:n] - reference[:n]
    return 10 * np.log10(float(np.dot(ref, ref)) / max(float(np.dot(err, err)), 1e-20))


def _median_f0(wav: np.ndarray, rate: int = SR) -> float:
    """Median fundamental frequency (Hz) of the voiced 40 ms frames, by autocorrelation peak in 60-400 Hz."""
    n, found = int(0.04 * rate), []
    lo, hi = int(rate / 400), int(rate / 60)
    for start in range(0, len(wav) - n, n):
        x = wav[start : start + n].astype(np.float64)
        if np.sqrt(np.mean(x**2)) < 0.05:
            continue
        x -= x.mean()
        ac = np.correlate(x, x, "full")[n - 1 :]
        found.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(found))


def _independent_resample(path, rate: int) -> np.ndarray:
    wav, native = sf.read(str(path), dtype="float64")
    g = gcd(native, rate)
    return resample_poly(wav, rate // g, native // g)


def test_folder_layout_speakers_transcripts_and_resampling(tmp_path):
    src = make_speech_folder(tmp_path / "src", SPEAKERS, SENTENCES, layout="folder")  # 22050 Hz from espeak-ng
    nested = src.root / "anna" / "chapter1" / "anna_x.wav"  # SRC/<speaker>/<chapter>/<clip>.wav (LibriTTS-like)
    nested.parent.mkdir()
    sf.write(str(nested), synthesize("Good morning.", SPEAKERS[0]), 22050, subtype="PCM_16")
    nested.with_suffix(".txt").write_text("Good morning.\n", encoding="utf-8")
    out = tmp_path / "out"
    summary = prepare_dataset([src.root], out, source="folder", speech=True, **KW)

    segments = _segments(out)
    assert set(segments) == {c.clip_id for c in src.clips} | {"anna_x"}  # one whole segment per clip
    assert summary["counts"]["rejected"] == 0 and "rejected_by" not in summary["counts"]
    for clip in src.clips:
        entry, info, wav = segments[clip.clip_id]
        assert info["transcript"] == clip.text and info["description"] == clip.text
        assert info["speaker"] == clip.speaker and info["genre"] == "speech"
        # resampled 22050 → 24000 Hz: same duration, same signal as an independent resampler (scipy polyphase)
        assert entry.sample_rate == SR and len(wav) == round(clip.samples * SR / 22050)
        assert entry.duration == pytest.approx(clip.seconds, abs=1e-4)
        assert _snr_db(_independent_resample(clip.audio, SR), wav) > 25  # measured 34-52 dB
    assert segments["anna_x"][1]["speaker"] == "anna" and segments["anna_x"][1]["transcript"] == "Good morning."
    # the two speakers really differ: median pitch of the same sentence (espeak-ng -p 80 vs -p 20)
    pitch = {s: _median_f0(segments[f"{s}_000"][2]) for s in ("anna", "bert")}
    assert pitch["anna"] > 1.4 * pitch["bert"]


def test_ljspeech_layout_speaker_column_and_16k_input(tmp_path):
    src = make_speech_folder(tmp_path / "lj", SPEAKERS, SENTENCES[:1], layout="ljspeech", sample_rate=16000)
    out = tmp_path / "out"
    prepare_dataset([src.root], out, source="ljspeech", **KW)
    segments = _segments(out)
    assert set(segments) == {"anna_000", "bert_000"}
    for clip in src.clips:
        entry, info, wav = segments[clip.clip_id]
        assert info["speaker"] == clip.speaker and info["transcript"] == clip.text
        assert len(wav) == round(clip.samples * SR / 16000)  # 16 kHz → 24 kHz
        assert _snr_db(_independent_resample(clip.audio, SR), wav) > 25  # measured 34-52 dB

    plain = make_speech_folder(tmp_path / "lj1", SPEAKERS[:1], SENTENCES[:1], layout="ljspeech", speaker_column=False)
    prepare_dataset([plain.root], tmp_path / "out1", source="ljspeech", **KW)
    (info,) = [s[1] for s in _segments(tmp_path / "out1").values()]
    assert "speaker" not in info and info["transcript"] == SENTENCES[0]  # a single-speaker dataset: no field


def test_nfd_transcripts_and_speaker_names_become_nfc(tmp_path):
    text = "Café déjà vu, señor."
    nfd, nfc = unicodedata.normalize("NFD", text), unicodedata.normalize("NFC", text)
    assert nfd != nfc
    josé = unicodedata.normalize("NFD", "José")
    src = make_speech_folder(tmp_path / "src", [Speaker(josé, "en-us")], [nfd], layout="folder")
    assert (src.root / josé / f"{josé}_000.txt").read_text(encoding="utf-8").strip() == nfd  # written as NFD
    lj = make_speech_folder(tmp_path / "lj", [Speaker(josé, "en-gb")], [nfd], layout="ljspeech")
    out = tmp_path / "out"
    prepare_dataset([src.root], out, source="folder", speech=True, **KW)
    prepare_dataset([lj.root], tmp_path / "out_lj", source="ljspeech", **KW)
    for folder in (out, tmp_path / "out_lj"):
        (info,) = [s[1] for s in _segments(folder).values()]
        assert info["transcript"] == nfc and info["description"] == nfc
        assert info["speaker"] == unicodedata.normalize("NFC", "José")


def test_missing_and_empty_transcripts_are_skipped_with_a_logged_reason(tmp_path, caplog):
    src = make_speech_folder(tmp_path / "src", SPEAKERS[:1], SENTENCES, layout="folder")
    (src.root / "anna" / "anna_000.txt").unlink()  # missing
    (src.root / "anna" / "anna_001.txt").write_text(" \n\t\n", encoding="utf-8")  # empty
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="tunesmith.data.prepare"):
        summary = prepare_dataset([src.root], out, source="folder", speech=True, **KW)
    assert summary["counts"]["rejected_by"] == {"no_transcript": 2} and summary["counts"]["segments"]["total"] == 0
    reasons = {r["file"].rsplit("/", 1)[-1]: r for r in _rejected(out)}
    assert reasons["anna_000.wav"]["reason"] == "no transcript: anna_000.txt is missing (--speech)"
    assert reasons["anna_001.wav"]["reason"] == "empty transcript: anna_001.txt holds no text"
    assert all(r["code"] == "no_transcript" for r in reasons.values())
    logged = [r.getMessage() for r in caplog.records if "without a transcript" in r.getMessage()]
    assert len(logged) == 1 and "skipped 2 clip(s)" in logged[0] and "anna_000.txt is missing" in logged[0]

    lj = make_speech_folder(tmp_path / "lj", SPEAKERS[:1], SENTENCES, layout="ljspeech")
    rows = (lj.root / "metadata.csv").read_text(encoding="utf-8").splitlines()
    rows[0] = "anna_000|||anna"  # a row without text
    (lj.root / "metadata.csv").write_text("\n".join(rows[:1]) + "\n", encoding="utf-8")  # anna_001: no row at all
    summary = prepare_dataset([lj.root], tmp_path / "out_lj", source="ljspeech", **KW)
    assert summary["counts"]["rejected_by"] == {"no_transcript": 2} and summary["counts"]["segments"]["total"] == 0
    reasons = " | ".join(r["reason"] for r in _rejected(tmp_path / "out_lj"))
    assert "empty transcript" in reasons and "no transcript: no row for anna_001" in reasons


def test_too_long_clips_are_skipped_never_cut(tmp_path, caplog):
    src = make_speech_folder(tmp_path / "src", SPEAKERS[:1], ["Yes.", "The cat sat on the mat, again and again."])
    short, long = src.clips
    assert short.seconds < 1.0 < 2.0 < long.seconds
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="tunesmith.data.prepare"):
        summary = prepare_dataset([src.root], out, source="folder", speech=True, max_seconds=1.0, **KW)
    assert set(_segments(out)) == {short.clip_id}
    assert summary["counts"]["rejected_by"] == {"too_long": 1} and summary["settings"]["max_seconds"] == 1.0
    (rejection,) = _rejected(out)
    assert rejection["code"] == "too_long" and rejection["file"] == str(long.audio.resolve())
    assert rejection["reason"].startswith("longer than --max-seconds 1 s (") and "never cut" in rejection["reason"]
    assert any("skipped 1 clip(s) longer than the maximum" in r.getMessage() for r in caplog.records)

    # the limit is an output setting: another one into the same folder is refused, the same one resumes
    with pytest.raises(UserError, match="max_seconds=1.0"):
        prepare_dataset([src.root], out, source="folder", speech=True, max_seconds=30.0, **KW)
    with pytest.raises(UserError, match=r"max_seconds=1.0; this run asks for max_seconds=None.*--max-seconds 1.0"):
        prepare_dataset([src.root], out, source="folder", speech=True, **KW)  # left out: refused too
    again = prepare_dataset([src.root], out, source="folder", speech=True, max_seconds=1.0, **KW)
    assert again["run"]["processed"] == 0 and again["counts"]["rejected_by"] == {"too_long": 1}

    # without --max-seconds, --segment is the limit (the behaviour before the flag existed)
    summary = prepare_dataset([src.root], tmp_path / "out2", source="folder", speech=True, segment=2.0, **KW)
    assert "longer than --segment 2 s" in _rejected(tmp_path / "out2")[0]["reason"]
    assert "max_seconds" not in summary["settings"]  # not stored when not given: older datasets stay unchanged
    big = prepare_dataset([src.root], tmp_path / "out3", source="folder", speech=True, max_seconds=30.0, **KW)
    assert big["counts"]["segments"]["total"] == 2 and "rejected_by" not in big["counts"]


def test_speech_flag_only_for_folder_sources_and_cli(tmp_path, capsys):
    src = make_speech_folder(tmp_path / "src", SPEAKERS[:1], SENTENCES[:1])
    (src.root / "anna" / "orphan.wav").write_bytes(src.clips[0].audio.read_bytes())  # no transcript
    with pytest.raises(UserError, match="--speech is for folder sources"):
        prepare_dataset([], tmp_path / "syn", source="synthetic", num_tracks=1, speech=True, progress=False)
    out = tmp_path / "out"
    argv = ["prepare", str(src.root), "--out", str(out), "--source", "folder", "--speech"]
    assert main([*argv, "--sample-rate", str(SR), "--max-seconds", "30", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 segments" in printed and "1 clips skipped: without a transcript" in printed
    (info,) = [s[1] for s in _segments(out).values()]
    assert info["speaker"] == "anna" and info["transcript"] == SENTENCES[0]
