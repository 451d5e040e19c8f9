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
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.manifest import DATASET_JSON, SEGMENTS_DIR, SPLITS, ManifestEntry, manifest_path, write_manifest
from tunesmith.data.sources import (
    KINDS,
    Rejection,
    ScanResult,
    Track,
    detect_kind,
    scan_source,
    scan_synthetic,
    track_key,
)
from tunesmith.errors import UserError

log = logging.getLogger(__name__)

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
}


class OutputError(UserError):
    """Writing the dataset failed (disk full, permissions): the run stops; re-running resumes."""


# --------------------------------------------------------------------------- per-track work


def _segment_blocks(blocks: Iterable[np.ndarray], channels: int, seg_frames: int) -> Iterator[np.ndarray]:
    """Regroup ``[C, n]`` blocks into ``[C, seg_frames]`` segments; the last one may be shorter."""
    buf = np.empty((channels, seg_frames), np.float32)
    fill = 0
    for block in blocks:
        pos = 0
        while pos < block.shape[1]:
            take = min(seg_frames - fill, block.shape[1] - pos)
            buf[:, fill : fill + take] = block[:, pos : pos + take]
            fill += take
            pos += take
            if fill == seg_frames:
                yield buf.copy()
                fill = 0
    if fill:
        yield buf[:, :fill].copy()


def _array_blocks(wav: np.ndarray, block: int = 1 << 16) -> Iterator[np.ndarray]:
    for start in range(0, wav.shape[1], block):
        yield wav[:, start : start + block]


def _rms_db(seg: np.ndarray) -> float:
    """RMS level of ``[C, n]`` in dBFS (-inf for digital silence)."""
    flat = np.ascontiguousarray(seg).ravel()
    rms = math.sqrt(float(np.dot(flat, flat)) / max(1, flat.size))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def process_track(track: dict[str, Any], settings: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Decode, convert and cut one track into ``DIR/segments/<key>/``; return its completion record.

    Never raises for a bad input: a problem becomes ``{"status": "rejected", "reason": ...}``.
    """
    from tunesmith.audio.io import AudioStream, save_audio, write_atomic_text

    t = Track(**track)
    key = track_key(t)
    rel_dir = f"{SEGMENTS_DIR}/{key}"
    seg_dir = Path(out_dir) / rel_dir
    if seg_dir.exists():  # leftovers of an interrupted attempt: never referenced by a manifest
        shutil.rmtree(seg_dir)
    base = {"track_id": t.track_id, "key": key, "fingerprint": t.fingerprint(), "file": t.audio or t.track_id}
    base["split"] = split_of(t, settings["seed"], settings["valid_fraction"])
    sr, channels = settings["sample_rate"], settings["channels"]
    seg_frames = int(round(settings["segment"] * sr))
    min_frames = max(1, int(round(settings["min_segment"] * sr)))

    def reject(reason: str, **extra: Any) -> dict[str, Any]:
        if seg_dir.exists():
            shutil.rmtree(seg_dir, ignore_errors=True)
        return {**base, "status": "rejected", "reason": reason, **extra}

    try:
        stream = None
        if t.synth is not None:
            from tunesmith.data.synthetic import render_track

            blocks: Iterable[np.ndarray] = _array_blocks(render_track(t.synth, sr, channels))
        else:
            stream = AudioStream(t.audio, sr, channels)
            blocks = stream
        segments: list[list[Any]] = []
        silent = 0
        frames_out = 0
        tail_dropped = 0.0
        if t.whole:  # transcribed utterance: one segment, never cut
            parts = []
            for block in blocks:
                parts.append(block)
                frames_out += block.shape[1]
                if frames_out > seg_frames:
                    limit = settings["segment"]
                    return reject(f"longer than --segment {limit:g} s; a transcribed utterance is never cut")
            pieces: Iterable[np.ndarray] = [np.concatenate(parts, axis=1)] if parts else []
        else:
            pieces = _segment_blocks(blocks, channels, seg_frames)
        for index, seg in enumerate(pieces):
            n = seg.shape[1]
            if not t.whole:
                frames_out += n
                if n < min_frames:
                    tail_dropped = n / sr
                    continue
            if _rms_db(seg) < settings["silence_db"]:
                silent += 1
                continue
            name = f"{index:05d}"
            info = dict(t.meta)
            info.update(track_id=t.track_id, name=info.get("name") or t.name, segment_index=index)
            info.update(start=round(index * settings["segment"], 6) if not t.whole else 0.0, source=t.kind)
            sidecar = json.dumps(info, ensure_ascii=False, indent=1) + "\n"
            try:
                save_audio(seg_dir / f"{name}.{settings['format']}", seg, sr)
                write_atomic_text(seg_dir / f"{name}.json", sidecar, fsync=False)
            except OSError as err:  # the output's fault (disk full, permissions), not the input's: stop
                fix = "free space or fix permissions, then re-run"
                raise OutputError(f"cannot write into {seg_dir}: {err}; {fix}") from None
            segments.append([f"{rel_dir}/{name}.{settings['format']}", n / sr, round(float(np.abs(seg).max()), 6)])
        if stream is not None and stream.truncated:
            declared = stream.info.duration or 0.0
            got = stream.frames_in / stream.info.sample_rate
            return reject(f"truncated: the header declares {declared:.2f} s but only {got:.2f} s could be decoded")
        if frames_out == 0:
            return reject("empty: contains no audio frames")
        if not segments:
            seconds = frames_out / sr
            if not t.whole and frames_out < min_frames:
                return reject(f"too short: {seconds:.2f} s < --min-segment {settings['min_segment']:g} s")
            return reject(f"near-silent: every segment is below {settings['silence_db']:g} dBFS RMS", silent=silent)
        return {
            **base,
            "status": "done",
            "segments": segments,
            "silent": silent,
            "seconds": frames_out / sr,
            "tail_dropped": tail_dropped,
            "described": bool(str(t.meta.get("description") or "").strip()),
            "genre": str(t.meta.get("genre") or ""),
        }
    except UserError as err:
        if isinstance(err, OutputError):
            raise
        message = str(err)
        if t.audio and message.startswith(t.audio + ": "):
            message = message[len(t.audio) + 2 :]
        return reject(message)
    except Exception as err:  # a decoder or library failure on one file must not stop the run
        log.debug("track %s failed", t.track_id, exc_info=True)
        return reject(f"error while processing: {type(err).__name__}: {err}")


# --------------------------------------------------------------------------- state


class TrackLog:
    """``DIR/state/tracks.jsonl``: append-only completion records; the last record per track wins.

    A torn last line (killed mid-write) is cut off when the log is opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                with open(path, "r+b") as f:
                    f.truncate(cut)
                data = data[:cut]
            for line in data.decode("utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "track_id" in record:
                    self.records[record["track_id"]] = record
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def is_current(self, track: Track) -> bool:
        record = self.records.get(track.track_id)
        return record is not None and record.get("fingerprint") == track.fingerprint()

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records[record["track_id"]] = record

    def close(self) -> None:
        self._file.close()


def _check_settings(out: Path, settings: dict[str, Any]) -> bool:
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
    changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    if changed:
        was = ", ".join(f"{k}={a!r}" for k, (a, _) in changed.items())
        now = ", ".join(f"{k}={b!r}" for k, (_, b) in changed.items())
        same = " ".join(f"{OUTPUT_SETTINGS.get(k, k)} {a}" for k, (a, _) in changed.items() if a is not None)
        raise UserError(
            f"{out} was prepared with {was}; this run asks for {now}, which would change the output. "
            f"Use a new --out, or the original settings ({same})"
        )
    return False


def split_of(track: Track, seed: int, valid_fraction: float) -> str:
    """'valid' or 'train' from a hash of (seed, track id), or the track's own stratified hint."""
    if track.split_hint is not None:
        u = track.split_hint
    else:
        digest = hashlib.sha256(f"{seed}:{track.track_id}".encode()).hexdigest()
        u = int(digest[:16], 16) / 2**64
    return "valid" if u < valid_fraction else "train"


# --------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar (files, audio hours, rejects, ETA), or nothing when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        self.hours = 0.0
        self.rejected = 0
        if not enabled or total == 0:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("prepare"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files  {task.fields[hours]:.2f} h audio  {task.fields[rejected]} rejected"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.bar.add_task("prepare", total=total, hours=0.0, rejected=0)
        self.bar.start()

    def update(self, record: dict[str, Any]) -> None:
        if record["status"] == "done":
            self.hours += record["seconds"] / 3600
        else:
            self.rejected += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1, hours=self.hours, rejected=self.rejected)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def progress_enabled(requested: bool) -> bool:
    """Progress bars only on a terminal, and never with TUNESMITH_NO_PROGRESS=1."""
    return requested and os.environ.get("TUNESMITH_NO_PROGRESS", "") in ("", "0") and sys.stderr.isatty()


# --------------------------------------------------------------------------- running


def _worker_init() -> None:
    """Worker processes die with the parent (Linux), so a killed run leaves no writer behind."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _crash_record(track: Track) -> dict[str, Any]:
    return {
        "track_id": track.track_id,
        "key": track_key(track),
        "fingerprint": track.fingerprint(),
        "file": track.audio or track.track_id,
        "status": "rejected",
        "reason": "the decoder crashed the worker process on this file",
    }


def _pool_pass(
    batch: list[Track], settings: dict[str, Any], out: Path, workers: int, max_in_flight: int, on_record: Any, fn: Any
) -> tuple[list[Track], list[Track]]:
    """Run ``batch`` on a fresh pool. Returns ([], []) when done, or after a worker crash the
    tracks that were in flight (one of them killed it) and those not yet submitted."""
    todo = list(reversed(batch))
    in_flight: dict[cf.Future, Track] = {}
    ctx = multiprocessing.get_context("spawn")
    try:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            while todo or in_flight:
                while todo and len(in_flight) < max_in_flight:
                    track = todo.pop()
                    in_flight[pool.submit(fn, track.to_dict(), settings, str(out))] = track
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    result = future.result()  # raises BrokenProcessPool if that worker died
                    in_flight.pop(future)
                    on_record(result)
    except cf.process.BrokenProcessPool:
        return list(in_flight.values()), list(reversed(todo))
    return [], []


def _run_tracks(
    pending: list[Track], settings: dict[str, Any], out: Path, workers: int, on_record: Any, fn: Any = None
) -> None:
    """Process ``pending`` with ``fn`` (default :func:`process_track`) in this process (workers=1) or
    a process pool, calling ``on_record`` with each completion record. When a worker process dies
    (a decoder crash), the tracks it may have been working on are retried one at a time in a fresh
    single-worker pool; the one that crashes again is rejected, the others finish normally."""
    fn = fn or process_track
    if workers <= 1 or len(pending) <= 1:
        for track in pending:
            on_record(fn(track.to_dict(), settings, str(out)))
        return
    queue, suspects = list(pending), []
    while queue or suspects:
        if queue:
            in_flight, rest = _pool_pass(queue, settings, out, workers, 4 * workers, on_record, fn)
            queue, suspects = rest, suspects + in_flight
        else:
            in_flight, rest = _pool_pass(suspects, settings, out, 1, 1, on_record, fn)
            for track in in_flight:  # alone in its pool: this one crashed it
                on_record(_crash_record(track))
            suspects = rest


def _scan_all(
    sources: list[Path], source: str, out: Path, settings: dict[str, Any], num_tracks: int | None
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
            results.append((kind, scan_source(path, kind, exclude=out.resolve())))
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
) -> dict[str, Any]:
    """Prepare ``sources`` into the dataset folder ``out``; returns the summary (also ``out/dataset.json``).

    ``source``: auto (detected per path), folder, fma, jamendo, ljspeech or synthetic (then
    ``num_tracks`` tracks of ``track_duration`` seconds, default ``segment``, are generated).
    Audio becomes ``channels`` × ``sample_rate`` Hz segments of ``segment`` seconds (a tail of at
    least ``min_segment`` s, capped at ``segment``, is kept); segments below ``silence_db`` dBFS RMS are dropped.
    The summary holds the settings, counts, hours per split, caption coverage and, under "run",
    what this call did (processed, rejected, seconds).
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
    source_paths = [Path(s).expanduser().absolute() for s in sources]
    new_dataset = _check_settings(out, settings)
    tracks, scan_rejected, rows_without_audio, kinds = _scan_all(source_paths, source, out, settings, num_tracks)
    if new_dataset:  # only once the sources were found and read: a typo leaves no half-made DIR behind
        from tunesmith.audio.io import write_atomic_text

        write_atomic_text(out / STATE_DIR / "settings.json", json.dumps(settings, indent=1, sort_keys=True) + "\n")

    state = TrackLog(out / STATE_DIR / "tracks.jsonl")
    pending = [t for t in tracks if not state.is_current(t)]
    bar = _Progress(len(pending), progress_enabled(progress))
    run_counts: Counter[str] = Counter()

    def on_record(record: dict[str, Any]) -> None:
        state.append(record)
        run_counts[record["status"]] += 1
        bar.update(record)

    try:
        _run_tracks(pending, settings, out, workers, on_record)
    finally:
        bar.close()
        state.close()

    summary = _write_outputs(out, settings, state.records, scan_rejected, rows_without_audio, kinds)
    summary["run"] = {
        "processed": run_counts["done"],
        "rejected": run_counts["rejected"],
        "skipped_already_done": len(tracks) - len(pending),
        "seconds": round(time.perf_counter() - started, 3),
    }
    segments = summary["counts"]["segments"]
    if valid_fraction > 0 and segments["train"] and not segments["valid"]:
        log.warning("the valid split is empty (%d tracks); raise --valid-fraction to get one", len(tracks))
    if not segments["total"]:
        log.warning("no segments were prepared; see %s", out / "rejected.jsonl")
    return summary


def _write_outputs(
    out: Path,
    settings: dict[str, Any],
    records: dict[str, dict[str, Any]],
    scan_rejected: list[Rejection],
    rows_without_audio: int,
    kinds: Counter[str],
) -> dict[str, Any]:
    """Rebuild manifests, rejected.jsonl and dataset.json from the completion records."""
    from tunesmith.audio.io import write_atomic_text

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
            rejected.append({"file": record["file"], "reason": record["reason"], "track_id": track_id})
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
        write_atomic_text(rejected_path, rejected_text)
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
        },
        "hours": {s: round(seconds[s] / 3600, 6) for s in SPLITS} | {"total": round(sum(seconds.values()) / 3600, 6)},
        "caption_coverage": round(sum(described.values()) / total_segments, 6) if total_segments else 0.0,
        "genres": dict(genres.most_common()),
    }
    text = json.dumps(summary, indent=1, ensure_ascii=False) + "\n"
    path = out / DATASET_JSON
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_atomic_text(path, text)
    return summary
