"""Tracks whose audio is stored as bytes inside a dataset file (hf-dataset): the worker writes that one value to a
temporary file under ``DIR/state/``, prepares it like any file, and removes it; the record names the dataset row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.data.prepare.settings import STATE_DIR
from tunesmith.data.prepare.track import process_track
from tunesmith.data.sources import Track, track_key


def process_any_track(track: dict[str, Any], settings: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """:func:`process_track`, reading a ``blob`` track's bytes from its dataset file first."""
    blob = track.get("blob")
    if not blob:
        return process_track(track, settings, out_dir)
    from tunesmith.data.hf_dataset import blob_file
    from tunesmith.errors import UserError

    original = Track(**track)
    where = f"{blob['file']}:{blob.get('column')}[batch {blob['batch']}, row {blob['row']}]"
    try:
        with blob_file(blob, Path(out_dir) / STATE_DIR / "blobs") as path:
            record = process_track({**track, "audio": path, "blob": None}, settings, out_dir)
    except UserError as err:  # the value could not be read back (the dataset changed since the scan)
        record = {"track_id": original.track_id, "key": track_key(original), "status": "rejected", "reason": str(err)}
    record["fingerprint"] = original.fingerprint()
    record["file"] = where
    return record
