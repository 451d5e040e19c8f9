"""Settings that decide a prepared dataset's content, stored in ``DIR/state/settings.json``; a run asking
for other ones into the same DIR is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

FORMAT_VERSION = 1
STATE_DIR = "state"
SILENCE_DB = -60.0  # a segment whose RMS is below this (dBFS) is dropped as near-silent
# Settings whose change would change the output: refused into an existing DIR. (CLI flag for messages.)
OUTPUT_SETTINGS: dict[str, str] = {
    "sample_rate": "--sample-rate",
    "channels": "--channels",
    "segment": "--segment",
    "min_segment": "--min-segment",
    "valid_fraction": "--valid-fraction",
    "seed": "--seed",
    "format": "--format",
    "silence_db": "--silence-db",
    "track_duration": "--track-duration",
    "max_seconds": "--max-seconds",  # only stored when given; absent: transcribed utterances limited by --segment
}


class OutputError(UserError):
    """Writing the dataset failed (disk full, permissions): the run stops; re-running resumes."""


def check_settings(out: Path, settings: dict[str, Any]) -> bool:
    """Refuse output-changing settings that differ from those DIR was prepared with, and a DIR that
    is not a dataset. Returns True when DIR is new (its settings still to be written)."""
    path = out / STATE_DIR / "settings.json"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the dataset")
    if not path.is_file():
        if out.is_dir() and any(p.name != STATE_DIR for p in out.iterdir()):
            raise UserError(
                f"{out} is not empty and is not a dataset made by `tunesmith prepare`; choose a new or empty --out"
            )
        return True
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable ({err}); delete {out} and prepare again") from None
    keys = [*settings, *(k for k in old if k in OUTPUT_SETTINGS and k not in settings)]  # a setting left out
    changed = {k: (old.get(k), settings.get(k)) for k in keys if old.get(k) != settings.get(k)}
    if changed:
        was = ", ".join(f"{k}={a!r}" for k, (a, _) in changed.items())
        now = ", ".join(f"{k}={b!r}" for k, (_, b) in changed.items())
        same = " ".join(f"{OUTPUT_SETTINGS.get(k, k)} {a}" for k, (a, _) in changed.items() if a is not None)
        raise UserError(
            f"{out} was prepared with {was}; this run asks for {now}, which would change the output. "
            f"Use a new --out, or the original settings ({same})"
        )
    return False
