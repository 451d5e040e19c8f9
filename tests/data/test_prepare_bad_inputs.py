"""Every bad input is a line in rejected.jsonl (file + reason) or a clear error, never a crash of the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from support.audio import write_tone
from tunesmith.data.manifest import read_info, read_manifest
from tunesmith.data.prepare import prepare_dataset
from tunesmith.errors import UserError


def _rejected(out) -> dict[str, str]:
    lines = (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["file"]: json.loads(line)["reason"] for line in lines}


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "messy dir ✓"
    write_tone(root / "good one.wav", 3.0, 16000)
    (root / "zero.wav").write_bytes(b"")
    (root / "notes as audio.wav").write_text("this is a text file, not audio\n" * 50)
    (root / "random bytes.mp3").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    trunc = write_tone(root / "truncated.wav", 4.0, 16000)
    trunc.write_bytes(trunc.read_bytes()[:30000])
    trunc_flac = write_tone(root / "truncated.flac", 4.0, 16000)
    trunc_flac.write_bytes(trunc_flac.read_bytes()[: len(trunc_flac.read_bytes()) // 2])
    write_tone(root / "short.wav", 0.4, 16000)
    silent = root / "silence.wav"
    sf.write(str(silent), np.zeros(16000 * 3, np.float32), 16000)
    mixed = np.concatenate([np.zeros(2 * 16000), 0.5 * np.sin(np.arange(16000) * 0.2)]).astype(np.float32)
    sf.write(str(root / "half silent.wav"), mixed, 16000)  # segment 0 silent, segment 1 kept
    mp3 = write_tone(root / "x.mp3", 2.5, 22050)
    (root / "mp3 named.wav").write_bytes(mp3.read_bytes())  # wrong extension: decodes by content
    mp3.unlink()
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    write_tone(root / "bad json.wav", 2.0, 16000)
    (root / "bad json.json").write_text("{not json")
    write_tone(root / "list json.wav", 2.0, 16000)
    (root / "list json.json").write_text("[1, 2, 3]")
    write_tone(root / "latin1 caption.wav", 2.0, 16000)
    (root / "latin1 caption.txt").write_bytes("caf\xe9 jazz".encode("latin-1"))
    write_tone(root / "bad bpm.wav", 2.0, 16000)
    (root / "bad bpm.json").write_text(json.dumps({"bpm": "fast"}))
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


EXPECTED = {
    "zero.wav": "empty file",
    "notes as audio.wav": "cannot decode audio",
    "random bytes.mp3": "cannot decode audio",
    "truncated.wav": "truncated",
    "truncated.flac": "truncated",
    "short.wav": "too short",
    "silence.wav": "near-silent",
    "cover.jpg": "not an audio file",
    "bad json.wav": "unreadable metadata bad json.json",
    "list json.wav": "expected a JSON object",
    "latin1 caption.wav": "unreadable metadata latin1 caption.txt",
    "bad bpm.wav": "'bpm' must be a number",
}


def test_every_bad_input_is_reported_and_the_rest_is_used(messy, tmp_path):
    out = tmp_path / "out"
    summary = prepare_dataset([messy], out, sample_rate=16000, segment=1.0, min_segment=0.5, progress=False)
    rejected = _rejected(out)
    by_name = {path.rsplit("/", 1)[-1]: reason for path, reason in rejected.items()}
    for name, reason in EXPECTED.items():
        assert name in by_name, f"{name} not in rejected.jsonl"
        assert reason in by_name[name], (name, by_name[name])
    assert set(by_name) == set(EXPECTED)  # nothing else rejected, dotfiles skipped
    assert all(str(messy) in path for path in rejected)  # full paths, unicode intact
    assert summary["counts"]["rejected"] == len(EXPECTED)
    used = {read_info(out, e)["track_id"].rsplit("/", 1)[-1] for s in ("train", "valid") for e in read_manifest(out, s)}
    assert used == {"good one.wav", "half silent.wav", "mp3 named.wav"}
    assert summary["counts"]["silent_segments_dropped"] == 2 + 3  # half silent: 2 of 3; silence.wav: 3
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]
    assert not leftovers
    seg_dirs = {p.name.rsplit("-", 1)[0] for p in (out / "segments").iterdir()}
    assert seg_dirs == {"good_one", "half_silent", "mp3_named"}  # rejected tracks leave no segments


def test_rejections_are_remembered_and_retried_when_the_file_changes(messy, tmp_path):
    out = tmp_path / "out"
    kw = {"sample_rate": 16000, "segment": 1.0, "min_segment": 0.5, "progress": False}
    prepare_dataset([messy], out, **kw)
    again = prepare_dataset([messy], out, **kw)
    assert again["run"]["processed"] == 0 and again["run"]["rejected"] == 0
    assert again["counts"]["rejected"] == len(EXPECTED)
    write_tone(messy / "zero.wav", 2.0, 16000)  # the user fixed the file
    fixed = prepare_dataset([messy], out, **kw)
    assert fixed["run"]["processed"] == 1
    assert not any(p.endswith("zero.wav") for p in _rejected(out))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        prepare_dataset([tmp_path / "nowhere"], tmp_path / "out", progress=False)


def test_a_crash_inside_one_track_does_not_stop_the_run(tmp_path, monkeypatch):
    """An unexpected library error on one file becomes a rejection; the other files are prepared."""
    import tunesmith.audio.io as io

    src = tmp_path / "src"
    write_tone(src / "a.wav", 2.0, 16000)
    write_tone(src / "boom.wav", 2.0, 16000)
    real = io.AudioStream.__iter__

    def flaky(self):
        if self.path.name == "boom.wav":
            raise MemoryError("decoder exploded")
        return real(self)

    monkeypatch.setattr(io.AudioStream, "__iter__", flaky)
    out = tmp_path / "out"
    summary = prepare_dataset([src], out, sample_rate=16000, segment=1.0, progress=False, valid_fraction=0.0)
    assert summary["counts"]["tracks"]["total"] == 1
    (reason,) = [r for f, r in _rejected(out).items() if f.endswith("boom.wav")]
    assert "MemoryError" in reason and "decoder exploded" in reason


def test_a_full_disk_stops_the_run_with_a_clear_error_and_resumes(tmp_path, monkeypatch):
    """An output failure is not the input's fault: no rejection is recorded, the run stops, a re-run finishes."""
    import tunesmith.audio.io as io

    src = tmp_path / "src"
    for name in ("a", "b"):
        write_tone(src / f"{name}.wav", 2.0, 16000)
    real = io._write_wav_pcm16

    def full(path, wav, sample_rate):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "_write_wav_pcm16", full)
    out = tmp_path / "out"
    kw = {"sample_rate": 16000, "segment": 1.0, "progress": False, "valid_fraction": 0.0}
    with pytest.raises(UserError, match="No space left on device.*re-run"):
        prepare_dataset([src], out, **kw)
    monkeypatch.setattr(io, "_write_wav_pcm16", real)
    summary = prepare_dataset([src], out, **kw)
    assert summary["run"]["processed"] == 2 and summary["counts"]["rejected"] == 0


def test_a_typo_in_a_source_leaves_no_dataset_behind(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="no such file or folder"):
        prepare_dataset([tmp_path / "typo"], out, progress=False)
    assert not out.exists() or not any(out.iterdir())
    src = tmp_path / "src"
    write_tone(src / "a.wav", 1.0, 8000)
    prepare_dataset([src], out, sample_rate=8000, segment=1.0, progress=False)  # other settings: still accepted
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        prepare_dataset([src], tmp_path / "file", progress=False)
