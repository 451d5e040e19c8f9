"""Optional MIDI → wav rendering with the fluidsynth command and a General MIDI soundfont.

Debian: ``apt-get install fluidsynth fluid-soundfont-gm``. Without them rendering is skipped with a
logged reason; nothing else depends on it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("tunesmith.midi")

SOUNDFONT_PATHS: tuple[str, ...] = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)


def find_renderer() -> tuple[str, str] | None:
    """(fluidsynth binary, soundfont path), or None when either is missing. ``TUNESMITH_SOUNDFONT``
    overrides the soundfont search."""
    binary = shutil.which("fluidsynth")
    candidates = [os.environ.get("TUNESMITH_SOUNDFONT", ""), *SOUNDFONT_PATHS]
    soundfont = next((p for p in candidates if p and Path(p).is_file()), None)
    if binary is None or soundfont is None:
        return None
    return binary, soundfont


def render_wav(midi_path: str | Path, wav_path: str | Path | None = None, sample_rate: int = 44100) -> Path | None:
    """Render ``midi_path`` to ``wav_path`` (default: same name, .wav); None (logged) when not possible."""
    found = find_renderer()
    if found is None:
        log.info(
            "wav rendering skipped: needs the fluidsynth command and a GM soundfont (apt-get install "
            "fluidsynth fluid-soundfont-gm, or set TUNESMITH_SOUNDFONT)"
        )
        return None
    binary, soundfont = found
    wav = Path(wav_path) if wav_path else Path(midi_path).with_suffix(".wav")
    cmd = [binary, "-ni", "-g", "0.8", "-F", str(wav), "-r", str(sample_rate), soundfont, str(midi_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not wav.is_file():
        log.warning("fluidsynth failed on %s: %s", midi_path, (done.stderr or done.stdout).strip()[-300:])
        return None
    return wav
