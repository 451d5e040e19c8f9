"""``prepare_dataset``: scan the sources, process the tracks not done yet, rebuild the outputs."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tunesmith.data.prepare.blob import process_any_track
from tunesmith.data.prepare.outputs import write_outputs
from tunesmith.data.prepare.pool import run_tracks
from tunesmith.data.prepare.progress import progress_enabled
from tunesmith.data.prepare.resume import TrackLog
from tunesmith.data.prepare.settings import SILENCE_DB, STATE_DIR, check_settings
from tunesmith.data.prepare.split import assign_splits
from tunesmith.data.sources import KINDS, Rejection, ScanResult, Track, detect_kind, scan_source, scan_synthetic
from tunesmith.data.subset import choose_subset, filter_tracks, parse_filters
from tunesmith.errors import UserError
from tunesmith.fileio import atomic_write_text
from tunesmith.runtime import EpochProgress

log = logging.getLogger("tunesmith.data.prepare")


def _scan_all(
    sources: list[Path],
    source: str,
    out: Path,
    settings: dict[str, Any],
    num_tracks: int | None,
    hf_options: dict[str, Any] | None = None,
    speech: bool = False,
) -> tuple[list[Track], list[Rejection], int, Counter[str]]:
    tracks: list[Track] = []
    rejected: list[Rejection] = []
    rows_without_audio = 0
    kinds: Counter[str] = Counter()
    results: list[tuple[str, ScanResult]] = []
    if source == "synthetic" or (not sources and num_tracks):
        if sources:
            raise UserError("--source synthetic takes no SOURCE paths; use --num-tracks N")
        results.append(
            (
                "synthetic",
                scan_synthetic(
                    num_tracks or 0, settings["track_duration"], settings["seed"], settings["valid_fraction"]
                ),
            )
        )
    else:
        for path in sources:
            kind = detect_kind(path) if source == "auto" and path.exists() else source
            found = scan_source(path, kind, exclude=out.resolve(), options=hf_options, speech=speech)
            results.append((kind, found))
    seen: set[str] = set()
    for kind, result in results:
        for track in result.tracks:
            if track.track_id in seen:
                continue
            seen.add(track.track_id)
            tracks.append(track)
            kinds[kind] += 1
        rejected.extend(result.rejected)
        rows_without_audio += result.rows_without_audio
    return tracks, rejected, rows_without_audio, kinds


def prepare_dataset(
    sources: list[str | Path],
    out: str | Path,
    *,
    source: str = "auto",
    sample_rate: int = 32000,
    channels: int = 1,
    segment: float = 10.0,
    min_segment: float = 5.0,
    valid_fraction: float = 0.1,
    seed: int = 0,
    format: str = "wav",
    workers: int = 1,
    num_tracks: int | None = None,
    track_duration: float | None = None,
    progress: bool = True,
    silence_db: float = SILENCE_DB,
    max_tracks: int | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    hf_options: dict[str, Any] | None = None,
    speech: bool = False,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Prepare ``sources`` into the dataset folder ``out``; returns the summary (also ``out/dataset.json``).

    ``source``: auto (detected per path), folder, fma, jamendo, ljspeech or synthetic (then
    ``num_tracks`` tracks of ``track_duration`` seconds, default ``segment``, are generated).
    Audio becomes ``channels`` × ``sample_rate`` Hz segments of ``segment`` seconds (a tail of at
    least ``min_segment`` s, capped at ``segment``, is kept); segments below ``silence_db`` dBFS RMS are dropped.
    The summary holds the settings, counts, hours per split, caption coverage and, under "run",
    what this call did (processed, rejected, seconds).
    ``include``/``exclude`` (path globs or KEY=PATTERN metadata filters) and ``max_tracks`` (a deterministic
    subset by hash of seed and track id) choose part of the sources: :mod:`tunesmith.data.subset`.
    ``hf_options`` (audio_column, text_column, columns) are for hf-dataset sources.
    ``speech``: folder sources hold transcribed speech (``<clip>.txt`` transcripts, speakers from sub-folders;
    see :mod:`tunesmith.data.sources`). Transcribed utterances (ljspeech, ``speech`` folders) are never cut: one
    longer than ``max_seconds`` (default: ``segment``) is skipped; so is one without a transcript. Both are
    logged and counted in the summary's ``counts.rejected_by``.
    """
    started = time.perf_counter()
    if source not in ("auto", *KINDS):
        raise UserError(f"unknown --source {source!r}; choose one of auto, {', '.join(KINDS)}")
    if format not in ("wav", "flac"):
        raise UserError(f"--format must be wav or flac, got {format!r}")
    if sample_rate < 1000 or sample_rate > 384000:
        raise UserError(f"--sample-rate must be between 1000 and 384000 Hz, got {sample_rate}")
    if channels not in (1, 2):
        raise UserError(f"--channels must be 1 or 2, got {channels}")
    if not segment > 0 or not min_segment >= 0:
        raise UserError(f"need --segment > 0 and --min-segment >= 0, got {segment} and {min_segment}")
    min_segment = min(min_segment, segment)  # only whole segments are kept then; a tail is never longer
    if not 0 <= valid_fraction < 1:
        raise UserError(f"--valid-fraction must be in [0, 1), got {valid_fraction}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    synthetic = source == "synthetic" or (not sources and bool(num_tracks))
    if synthetic and not num_tracks:
        raise UserError("--source synthetic needs --num-tracks N (N >= 1)")
    if not synthetic and not sources:
        raise UserError("no SOURCE given: pass audio folders/files, or --source synthetic --num-tracks N")
    if track_duration is not None and not synthetic:
        raise UserError("--track-duration is only for --source synthetic")
    if track_duration is not None and not track_duration > 0:
        raise UserError(f"--track-duration must be positive, got {track_duration}")
    if max_seconds is not None and not max_seconds > 0:
        raise UserError(f"--max-seconds must be positive, got {max_seconds}")
    if speech and synthetic:
        raise UserError("--speech is for folder sources of transcribed speech, not --source synthetic")
    out = Path(out).absolute()
    settings: dict[str, Any] = {
        "sample_rate": int(sample_rate),
        "channels": int(channels),
        "segment": float(segment),
        "min_segment": float(min_segment),
        "valid_fraction": float(valid_fraction),
        "seed": int(seed),
        "format": format,
        "silence_db": float(silence_db),
        "track_duration": float(track_duration or segment) if synthetic else None,
    }
    if max_seconds is not None:  # stored only when given: datasets prepared without it keep their exact settings
        settings["max_seconds"] = float(max_seconds)
    source_paths = [Path(s).expanduser().absolute() for s in sources]
    new_dataset = check_settings(out, settings)
    log.info("scanning %s", ", ".join(str(p) for p in source_paths) or f"{num_tracks} synthetic tracks")
    track_filter = parse_filters(include, exclude)
    tracks, scan_rejected, rows_without_audio, kinds = _scan_all(
        source_paths, source, out, settings, num_tracks, hf_options, speech
    )
    scanned = len(tracks)
    tracks = filter_tracks(tracks, source_paths, track_filter)
    if new_dataset:  # only once the sources were found and read: a typo leaves no half-made DIR behind
        atomic_write_text(out / STATE_DIR / "settings.json", json.dumps(settings, indent=1, sort_keys=True) + "\n")

    state = TrackLog(out / STATE_DIR / "tracks.jsonl")
    filtered = len(tracks)
    prepared = {tid for tid, r in state.records.items() if r.get("status") == "done"}
    tracks = choose_subset(tracks, max_tracks, settings["seed"], keep=prepared)
    kinds = Counter(t.kind for t in tracks)
    if filtered < scanned or len(tracks) < filtered:
        log.info("%d of %d tracks chosen (--include/--exclude kept %d)", len(tracks), scanned, filtered)
    if max_tracks is not None and len(prepared) > max_tracks:
        log.warning("%s already holds %d tracks, more than --max-tracks %d", out, len(prepared), max_tracks)
    pending = [t for t in tracks if not state.is_current(t)]
    recorded = {tid: str(r.get("split")) for tid, r in state.records.items()}
    splits = assign_splits(tracks, settings["seed"], settings["valid_fraction"], recorded)
    log.info("%d tracks found: %d to process, %d already done", len(tracks), len(pending), len(tracks) - len(pending))
    bar = EpochProgress(
        "prepare",
        len(pending),
        enabled=progress_enabled(progress) and bool(pending),
        log_every=max(len(pending) // 10, 1),
    )
    totals = {"hours": 0.0, "rejected": 0}
    run_counts: Counter[str] = Counter()

    def on_record(record: dict[str, Any]) -> None:
        record["split"] = splits.get(record["track_id"], "train")
        state.append(record)
        run_counts[record["status"]] += 1
        if record["status"] == "done":
            totals["hours"] += record["seconds"] / 3600
        else:
            totals["rejected"] += 1
        bar.update(totals)

    try:
        run_tracks(pending, settings, out, workers, on_record, process_any_track)
    finally:
        bar.close()
        state.close()

    summary = write_outputs(out, settings, state.records, scan_rejected, rows_without_audio, kinds)
    summary["run"] = {
        "processed": run_counts["done"],
        "rejected": run_counts["rejected"],
        "skipped_already_done": len(tracks) - len(pending),
        "not_chosen": scanned - len(tracks),  # left out by --include/--exclude/--max-tracks
        "seconds": round(time.perf_counter() - started, 3),
    }
    _log_speech_skips(out, summary)
    segments = summary["counts"]["segments"]
    if valid_fraction > 0 and segments["train"] and not segments["valid"]:
        log.warning("the valid split is empty (%d tracks); raise --valid-fraction to get one", len(tracks))
    if not segments["total"]:
        log.warning("no segments were prepared; see %s", out / "rejected.jsonl")
    return summary


SKIP_WHAT = {
    "no_transcript": "without a transcript (missing or empty)",
    "too_long": "longer than the maximum (--max-seconds, else --segment; utterances are never cut)",
}


def _log_speech_skips(out: Path, summary: dict[str, Any]) -> None:
    """One warning per class of skipped speech clip: the count, up to three examples and where the list is."""
    by_code = summary["counts"].get("rejected_by") or {}
    if not by_code:
        return
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    for code, count in by_code.items():
        examples = [f"{r['file']}: {r['reason']}" for r in rejected if r.get("code") == code][:3]
        more = f"; all in {out / 'rejected.jsonl'}" if count > len(examples) else ""
        what = SKIP_WHAT.get(code, code)
        log.warning("skipped %d clip(s) %s: %s%s", count, what, " | ".join(examples), more)
