"""Kill a real `tunesmith prepare` with SIGKILL mid-run, run it again: same dataset as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith.data.prepare import TrackLog, prepare_dataset
from tunesmith.data.sources import Track

ARGS = ["--source", "synthetic", "--num-tracks", "90", "--track-duration", "3", "--sample-rate", "16000"]
ARGS += ["--segment", "1", "--min-segment", "0.5", "--no-progress"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, TUNESMITH_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "tunesmith", "prepare", *ARGS, *extra, "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _records(out: Path) -> int:
    path = out / "state" / "tracks.jsonl"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _kill_after(out: Path, n_records: int, *extra: str) -> int:
    """Start a run, SIGKILL it once ``n_records`` tracks are recorded; return how many were recorded."""
    proc = _start(out, *extra)
    deadline = time.monotonic() + 120
    while _records(out) < n_records:
        assert proc.poll() is None, f"run ended before the kill: {proc.communicate()[1].decode()[-2000:]}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _records(out)


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every output file (state excluded) with the dataset's own path replaced, so two folders compare."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and "state" not in path.relative_to(out).parts:
            files[str(path.relative_to(out))] = path.read_bytes().replace(str(out).encode(), b"<DIR>")
    return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "ds"
    prepare_dataset(
        [], out, source="synthetic", num_tracks=90, track_duration=3.0, sample_rate=16000, segment=1.0,
        min_segment=0.5, progress=False,
    )  # fmt: skip
    return _snapshot(out)


def _finish(out: Path, *extra: str) -> dict:
    proc = _start(out, *extra, "--json")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    return json.loads(stdout)


def test_killed_three_times_then_finished(tmp_path, reference):
    out = tmp_path / "ds"
    recorded = [_kill_after(out, n) for n in (5, 30, 60)]
    assert recorded[-1] < 90
    assert not (out / "dataset.json").exists()  # never finished yet: no half-made dataset.json
    summary = _finish(out)
    assert 0 < summary["run"]["processed"] <= 90 - 60 and summary["run"]["skipped_already_done"] >= 60
    assert summary["counts"]["tracks"]["total"] == 90 and summary["counts"]["segments"]["total"] == 270
    assert _snapshot(out) == reference  # no duplicates, no partial files, nothing lost
    again = _finish(out)
    assert again["run"]["processed"] == 0 and _snapshot(out) == reference


def test_killed_with_workers_then_finished(tmp_path, reference):
    out = tmp_path / "ds"
    _kill_after(out, 20, "--workers", "2")
    leftovers = [p for p in (out / "segments").rglob("*") if ".tmp" in p.name]
    summary = _finish(out, "--workers", "2")
    assert summary["counts"]["segments"]["total"] == 270
    assert _snapshot(out) == reference
    assert all(not p.exists() for p in leftovers)


def test_torn_last_record_is_dropped(tmp_path):
    log_path = tmp_path / "state" / "tracks.jsonl"
    log = TrackLog(log_path)
    log.append({"track_id": "a", "fingerprint": Track("a", "folder", "a").fingerprint(), "status": "done"})
    log.close()
    with open(log_path, "a") as f:
        f.write('{"track_id": "b", "fingerp')  # killed mid-write
    reopened = TrackLog(log_path)
    assert set(reopened.records) == {"a"} and reopened.is_current(Track("a", "folder", "a"))
    reopened.append({"track_id": "c", "status": "rejected"})
    reopened.close()
    lines = log_path.read_text().splitlines()
    assert [json.loads(line)["track_id"] for line in lines] == ["a", "c"]
