"""``prepare_dataset``: audio sources → segments, sidecars, AudioCraft manifests, dataset.json.

Resumable and idempotent. Every segment is written atomically (temp file + rename) into its
track's folder ``DIR/segments/<track>/``; when a track is finished (or rejected) one line is
appended to ``DIR/state/tracks.jsonl`` — the per-track completion record. Manifests,
``rejected.jsonl`` and ``dataset.json`` are rebuilt from those records at the end of every run
(atomically, and only when their content changes). Killed at any moment, a re-run redoes just
the tracks without a record (their folder is cleared first), so nothing is duplicated, partial
or lost. A track whose input changed (size, mtime, metadata) is redone; new tracks are added.

Settings that change the output (sample rate, channels, segment lengths, split, format, silence
threshold, synthetic track duration) are stored in ``DIR/state/settings.json``; a run asking for
others into the same DIR is refused.

Modules: ``settings`` (output settings, refused changes), ``split`` (train/valid by track), ``track`` (one track →
segments), ``resume``
(the completion log), ``pool`` (worker processes, crash isolation), ``outputs`` (manifests, rejected.jsonl,
dataset.json), ``progress`` and ``dataset`` (:func:`prepare_dataset`, tying them together).
"""

from __future__ import annotations

from tunesmith.data.prepare.dataset import prepare_dataset
from tunesmith.data.prepare.pool import run_tracks
from tunesmith.data.prepare.progress import progress_enabled
from tunesmith.data.prepare.resume import TrackLog
from tunesmith.data.prepare.settings import FORMAT_VERSION, OUTPUT_SETTINGS, SILENCE_DB, STATE_DIR, OutputError
from tunesmith.data.prepare.split import assign_splits, split_of
from tunesmith.data.prepare.track import process_track

__all__ = [
    "FORMAT_VERSION",
    "OUTPUT_SETTINGS",
    "SILENCE_DB",
    "STATE_DIR",
    "OutputError",
    "TrackLog",
    "assign_splits",
    "prepare_dataset",
    "process_track",
    "progress_enabled",
    "run_tracks",
    "split_of",
]
