"""tunesmith.audio.io: decoding every common format, resampling, channels, streaming, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

import tunesmith.audio.io as io
from support.audio import tone, write_m4a, write_tone
from tunesmith.audio.io import AudioStream, convert_channels, load_audio, probe_audio, resample, save_audio
from tunesmith.errors import UserError


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


def test_wav_roundtrip_is_exact_pcm16(tmp_path):
    path = write_tone(tmp_path / "a.wav", 1.0, 16000, channels=2, subtype="PCM_16")
    wav, sr = load_audio(path)
    ref, ref_sr = sf.read(str(path), dtype="float32", always_2d=True)  # independent reader
    assert sr == ref_sr == 16000 and wav.dtype == np.float32 and wav.shape == (2, 16000)
    np.testing.assert_array_equal(wav, ref.T)


@pytest.mark.parametrize("suffix", ["flac", "mp3", "ogg", "aiff"])
def test_soundfile_formats_decode(tmp_path, suffix):
    path = write_tone(tmp_path / f"a.{suffix}", 2.0, 44100, freq=440.0)
    wav, sr = load_audio(path)
    assert probe_audio(path).backend == "soundfile"
    assert sr == 44100 and wav.shape[0] == 1 and abs(wav.shape[1] - 88200) < 3000
    assert abs(_peak_hz(wav[0], sr) - 440.0) < 2.0
    assert 0.3 < np.sqrt(2) * wav[0, 5000:-5000].std() < 0.7


def test_opus_decodes(tmp_path):
    path = write_tone(tmp_path / "a.opus", 2.0, 48000, format="OGG", subtype="OPUS")
    wav, sr = load_audio(path, 32000)
    assert sr == 32000 and abs(wav.shape[1] - 64000) < 2000
    assert abs(_peak_hz(wav[0], sr) - 440.0) < 2.0


def test_m4a_uses_pyav(tmp_path):
    path = write_m4a(tmp_path / "a.m4a", 2.0, 44100, 440.0)
    assert probe_audio(path).backend == "pyav"
    wav, sr = load_audio(path, 32000, 1)
    assert sr == 32000 and wav.shape[0] == 1 and abs(wav.shape[1] - 64000) < 2000
    assert abs(_peak_hz(wav[0], sr) - 440.0) < 2.0


def test_wrong_extension_decodes_by_content(tmp_path):
    mp3 = write_tone(tmp_path / "x.mp3", 1.0, 22050)
    fake = tmp_path / "really_mp3.wav"
    fake.write_bytes(mp3.read_bytes())
    wav, sr = load_audio(fake)
    assert sr == 22050 and abs(_peak_hz(wav[0], sr) - 440.0) < 3.0


def test_resample_matches_scipy_polyphase(tmp_path):
    x = tone(1.0, 44100, 1000.0, channels=2)
    y = resample(x, 44100, 32000)
    ref = resample_poly(x.astype(np.float64), 320, 441, axis=1)  # independent reference
    assert y.shape == (2, 32000)
    err = np.abs(y[:, 500:-500] - ref[:, 500:-500]).max()
    assert err < 2e-3


def test_load_with_conversion(tmp_path):
    path = write_tone(tmp_path / "s.wav", 1.0, 44100, channels=2, subtype="FLOAT")
    wav, sr = load_audio(path, sample_rate=32000, channels=1)
    ref = resample_poly(tone(1.0, 44100, channels=2).mean(0, dtype=np.float64), 320, 441)
    assert sr == 32000 and wav.shape == (1, 32000)
    assert np.abs(wav[0, 500:-500] - ref[500:-500]).max() < 2e-3


def test_convert_channels_rules():
    stereo = np.stack([np.ones(4), -np.ones(4) * 0.5]).astype(np.float32)
    np.testing.assert_allclose(convert_channels(stereo, 1), [[0.25] * 4])
    np.testing.assert_array_equal(convert_channels(stereo[:1], 2), np.stack([stereo[0], stereo[0]]))
    surround = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.testing.assert_array_equal(convert_channels(surround, 2), surround[:2])
    with pytest.raises(UserError, match="cannot make 6 channels from 2"):
        convert_channels(stereo, 6)


def test_stream_equals_whole_file_and_blocks_are_bounded(tmp_path):
    path = write_tone(tmp_path / "long.flac", 12.0, 44100, channels=2)
    stream = AudioStream(path, 32000, 1, block_seconds=1.0)
    blocks = list(stream)
    assert max(b.shape[1] for b in blocks) <= 32000 + 1024  # never the whole file at once
    streamed = np.concatenate(blocks, axis=1)
    whole, _ = load_audio(path, 32000, 1)
    assert streamed.shape == whole.shape == (1, 12 * 32000)
    np.testing.assert_allclose(streamed, whole, atol=1e-4)
    assert stream.frames_in == 12 * 44100 and not stream.truncated


def test_truncated_wav_is_detected(tmp_path):
    path = write_tone(tmp_path / "t.wav", 4.0, 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    stream = AudioStream(path)
    frames = sum(b.shape[1] for b in stream)
    assert stream.truncated and frames < 40000
    assert stream.info.frames == 64000


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "empty file"), (b"this is not audio, just text\n" * 20, "cannot decode audio")],
)
def test_bad_files_raise_user_errors(tmp_path, content, match):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match) as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(UserError, match="is a folder"):
        load_audio(tmp_path)


def test_save_audio_numpy_torch_mono_and_flac(tmp_path):
    x = tone(0.5, 16000, channels=2)
    save_audio(tmp_path / "a.wav", x, 16000)
    save_audio(tmp_path / "b.flac", torch.from_numpy(x[0]), 16000)
    a, sr_a = sf.read(str(tmp_path / "a.wav"), always_2d=True)
    b, sr_b = sf.read(str(tmp_path / "b.flac"), always_2d=True)
    info = sf.info(str(tmp_path / "a.wav"))
    assert info.subtype == "PCM_16" and sf.info(str(tmp_path / "b.flac")).format == "FLAC"
    assert a.shape == (8000, 2) and b.shape == (8000, 1) and sr_a == sr_b == 16000
    np.testing.assert_allclose(a.T, x, atol=1 / 32767)
    np.testing.assert_allclose(b[:, 0], x[0], atol=1 / 32767)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.flac"]  # no temp files left


def test_save_audio_clips_and_rejects_bad_input(tmp_path):
    save_audio(tmp_path / "c.wav", np.array([2.0, -2.0, 0.5], np.float32), 8000)
    data, _ = sf.read(str(tmp_path / "c.wav"))
    np.testing.assert_allclose(data, [32767 / 32768, -1.0, 0.5], atol=1e-4)
    with pytest.raises(UserError, match="use .wav or .flac"):
        save_audio(tmp_path / "d.mp4", np.zeros(10, np.float32), 8000)
    with pytest.raises(UserError, match="samples, channels"):
        save_audio(tmp_path / "e.wav", np.zeros((1000, 2), np.float32), 8000)


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "keep.wav"
    save_audio(target, tone(0.1, 8000), 8000)
    before = target.read_bytes()

    def partial_then_fail(path, *args, **kwargs):
        Path(path).write_bytes(b"RIFF\0\0")  # half-written file, then the disk is full
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_wav_pcm16", partial_then_fail)
    monkeypatch.setattr(sf, "write", partial_then_fail)
    for name in ("keep.wav", "new.flac"):
        with pytest.raises(OSError, match="disk full"):
            save_audio(tmp_path / name, tone(0.2, 8000), 8000)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


def test_saved_audio_gets_the_umask_permissions(tmp_path):
    """Written through a temp file, yet readable by others like any file the user makes (not mkstemp's 0600)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_audio(tmp_path / "a.wav", tone(0.1, 8000), 8000)
        save_audio(tmp_path / "a.flac", tone(0.1, 8000), 8000)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.wav").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a.flac").stat().st_mode) == 0o644
