"""Manifests, ``rejected.jsonl`` and ``dataset.json``, rebuilt from the completion records."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tunesmith.data.manifest import DATASET_JSON, SPLITS, ManifestEntry, manifest_path, write_manifest
from tunesmith.data.prepare.settings import FORMAT_VERSION, STATE_DIR
from tunesmith.data.sources import Rejection
from tunesmith.fileio import atomic_write_text


def write_outputs(
    out: Path,
    settings: dict[str, Any],
    records: dict[str, dict[str, Any]],
    scan_rejected: list[Rejection],
    rows_without_audio: int,
    kinds: Counter[str],
) -> dict[str, Any]:
    """Rebuild manifests, rejected.jsonl and dataset.json from the completion records."""
    for folder in (out, out / STATE_DIR, *(out / "egs" / s for s in SPLITS)):  # temp files of a killed run
        for stale in folder.glob(".*.tmp*") if folder.is_dir() else ():
            stale.unlink(missing_ok=True)

    entries: dict[str, list[ManifestEntry]] = {s: [] for s in SPLITS}
    track_counts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    described: Counter[str] = Counter()
    genres: Counter[str] = Counter()
    silent = 0
    rejected = [r.to_dict() for r in scan_rejected]
    for track_id in sorted(records):
        record = records[track_id]
        silent += record.get("silent", 0)
        if record["status"] != "done":
            rejection = {"file": record["file"], "reason": record["reason"], "track_id": track_id}
            rejected.append(rejection | ({"code": record["code"]} if record.get("code") else {}))
            continue
        split = record.get("split") if record.get("split") in SPLITS else "train"
        track_counts[split] += 1
        genres[record.get("genre") or ""] += len(record["segments"])
        for rel, duration, amplitude in record["segments"]:
            entries[split].append(ManifestEntry(str(out / rel), duration, settings["sample_rate"], amplitude, 1.0))
            seconds[split] += duration
            described[split] += int(record.get("described", False))
    for split in SPLITS:
        entries[split].sort(key=lambda e: e.path)
        write_manifest(manifest_path(out, split), entries[split])
    rejected.sort(key=lambda r: (r["file"], r["reason"]))
    rejected_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected)
    rejected_path = out / "rejected.jsonl"
    if not rejected_path.is_file() or rejected_path.read_text(encoding="utf-8") != rejected_text:
        atomic_write_text(rejected_path, rejected_text)
    by_code = Counter(r["code"] for r in rejected if r.get("code"))
    n_segments = {s: len(entries[s]) for s in SPLITS}
    total_segments = sum(n_segments.values())
    from tunesmith import __version__

    summary: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created_by": f"tunesmith {__version__}",
        "root": str(out),
        **{k: settings[k] for k in ("sample_rate", "channels", "segment", "min_segment", "format")},
        "settings": settings,
        "source_kinds": dict(sorted(kinds.items())),
        "counts": {
            "tracks": dict(track_counts) | {"total": sum(track_counts.values())},
            "segments": n_segments | {"total": total_segments},
            "rejected": len(rejected),
            "silent_segments_dropped": silent,
            "metadata_rows_without_audio": rows_without_audio,
            # speech clips skipped by class (no_transcript, too_long); the key only appears when there are some
            **({"rejected_by": dict(sorted(by_code.items()))} if by_code else {}),
        },
        "hours": {s: round(seconds[s] / 3600, 6) for s in SPLITS} | {"total": round(sum(seconds.values()) / 3600, 6)},
        "caption_coverage": round(sum(described.values()) / total_segments, 6) if total_segments else 0.0,
        "genres": dict(genres.most_common()),
    }
    text = json.dumps(summary, indent=1, ensure_ascii=False) + "\n"
    path = out / DATASET_JSON
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return summary
