"""Running tracks in worker processes; a worker killed by a decoder crash costs only its own track."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import sys
from pathlib import Path
from typing import Any

from tunesmith.data.prepare.track import process_track
from tunesmith.data.sources import Track, track_key


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


def run_tracks(
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
