"""A real `tunesmith download` process killed with SIGKILL mid-file resumes without refetching; `--prepare`
chains into `tunesmith prepare` end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from support.download import Mirror, checksum_list, fma_archives
from tunesmith.cli import main


@pytest.fixture(scope="module")
def fma_mirror_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("fma-src")
    files = fma_archives(root / "mirror", root / "work", [2, 5, 140, 1001, 1002, 2003], seconds=3.0)
    return root / "mirror", files


def _serve_copy(src, files, tmp_path):
    served = tmp_path / "mirror"
    shutil.copytree(src, served)
    sums = checksum_list(tmp_path / "SHA256SUMS", {n: served / p.relative_to(src) for n, p in files.items()})
    return served, sums


def test_sigkill_mid_download_then_resume_fetches_only_the_rest(fma_mirror_src, tmp_path, capsys):
    served, sums = _serve_copy(*fma_mirror_src, tmp_path)
    size = (served / "fma_small.zip").stat().st_size
    target = tmp_path / "fma"
    argv = [sys.executable, "-m", "tunesmith", "download", "fma", "--to", str(target), "--no-progress"]
    argv += ["--checksums", str(sums), "--retries", "1", "--backoff", "0.01"]
    env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1"}
    with Mirror(served) as mirror:
        mirror.throttle = (1024, 0.01)  # ~100 KB/s: the kill lands inside fma_small.zip
        proc = subprocess.Popen([*argv, "--base-url", mirror.url], env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while mirror.sent.get("/fma_small.zip", 0) < size // 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        on_disk = (target / "fma_small.zip.part0").stat().st_size
        assert 0 < on_disk < size
        assert not (target / "fma_small").exists()

        mirror.throttle = None
        mirror.reset_counts()
        assert main([*argv[3:], "--base-url", mirror.url, "--json"]) == 0  # the resume, in this process
        gets = mirror.gets("/fma_small.zip")
        assert [g.range for g in gets] == [f"bytes={on_disk}-{size - 1}"]
        assert mirror.sent["/fma_small.zip"] == size - on_disk  # the bytes on disk were not fetched again
    report = json.loads(capsys.readouterr().out)
    small = next(r for r in report["archives"] if r["name"] == "fma_small.zip")
    assert small["resumed_from"] == on_disk and small["fetched"] == size - on_disk and small["verified"]
    assert (target / "fma_small.zip").read_bytes() == (served / "fma_small.zip").read_bytes()
    assert len(list((target / "fma_small").rglob("*.mp3"))) == 6


def test_download_with_prepare_chains_into_prepare(fma_mirror_src, tmp_path, capsys):
    served, sums = _serve_copy(*fma_mirror_src, tmp_path)
    out = tmp_path / "prepared"
    with Mirror(served) as mirror:
        argv = ["download", "fma", "--size", "small", "--to", str(tmp_path / "fma"), "--base-url", mirror.url]
        argv += ["--checksums", str(sums), "--no-progress", "--prepare", str(out)]
        argv += ["--prepare-args", "--sample-rate 16000 --segment 1 --min-segment 0.5 --max-tracks 4 --seed 3"]
        assert main(argv) == 0
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["counts"]["tracks"]["total"] == 4
    assert summary["settings"]["sample_rate"] == 16000
    text = capsys.readouterr().out
    assert "fma_small.zip: ok" in text and "4 tracks" in text
    rows = [json.loads(line) for split in ("train", "valid") for line in (out / "egs" / split / "data.jsonl").open()]
    sidecars = [json.loads((out / r["path"]).with_suffix(".json").read_text()) for r in rows]
    assert rows and {s["genre"] for s in sidecars} <= {"Rock", "Electronic", "Folk", "Hip-Hop"}
    assert len({s["track_id"] for s in sidecars}) == 4
