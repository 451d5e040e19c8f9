"""Optional fluidsynth rendering: a wav when the command and a soundfont exist, a logged skip otherwise."""

from __future__ import annotations

import logging

import numpy as np
import soundfile as sf

from tunesmith.models.midi import render
from tunesmith.models.midi.notes import write_midi
from tunesmith.models.midi.synthetic import synth_piece


def test_render_or_clean_skip(tmp_path, caplog) -> None:
    midi = write_midi(synth_piece("bach", 2.0, seed=1), tmp_path / "p.mid")
    if render.find_renderer() is None:
        with caplog.at_level(logging.INFO, logger="tunesmith.midi"):
            assert render.render_wav(midi) is None
        assert "fluidsynth" in caplog.text
        return
    wav = render.render_wav(midi, sample_rate=22050)
    audio, sr = sf.read(wav)
    assert sr == 22050 and len(audio) / sr >= 2.0
    assert float(np.sqrt(np.mean(audio**2))) > 1e-3  # not silence


def test_missing_binary_or_soundfont_skips(tmp_path, monkeypatch, caplog) -> None:
    midi = write_midi(synth_piece("mozart", 1.0, seed=2), tmp_path / "p.mid")
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    with caplog.at_level(logging.INFO, logger="tunesmith.midi"):
        assert render.render_wav(midi) is None
    assert "apt-get install" in caplog.text
    monkeypatch.undo()
    monkeypatch.setattr(render, "SOUNDFONT_PATHS", ())
    monkeypatch.setenv("TUNESMITH_SOUNDFONT", str(tmp_path / "none.sf2"))
    assert render.find_renderer() is None
