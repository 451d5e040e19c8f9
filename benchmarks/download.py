"""Benchmark `tunesmith download` against curl, and `prepare --source hf-dataset` in × real time per core.

1. Download throughput. One archive of random bytes (``--size-mib``, default 256) is served from a loopback
   HTTP server started here (Python's http.server, Range support, bodies sent with ``os.sendfile``).
   In one run, alternating, each repeat fetches the same archive:
       curl         ``curl -sS -o FILE URL`` (one connection, no verification)
       tunesmith    ``download_archives`` with the archive's sha256: probe, fetch (1 and 4 connections), the
                    sha256 computed while receiving and compared, the file renamed into place
   Reported: MiB/s (median over repeats) and the time ratio tunesmith / curl, verification included; a
   diagnostic row "fetch-no-hash" is the transfer alone (tunesmith's HTTP client without the checksum).
2. ``prepare --source hf-dataset``: tunesmith's synthetic tracks (``--tracks`` × ``--seconds``) encoded as mp3
   bytes in a dataset written by ``datasets.save_to_disk``, prepared with one worker (32 kHz mono, 10 s
   segments); the same mp3 files as a plain folder, side by side. Reported: audio seconds per CPU second
   (× real time per core) and per wall second.

    python benchmarks/download.py                       # 256 MiB, 5 repeats; 40 × 30 s tracks
    python benchmarks/download.py --size-mib 64 --repeats 3 --tracks 12 --seconds 20   # quick
Prints a markdown table and writes JSON (default benchmarks/.work/download/results.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / ".work" / "download"
MIB = 1 << 20


# --------------------------------------------------------------------------- loopback server


class _Handler(BaseHTTPRequestHandler):
    root: Path
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(False)

    def do_GET(self) -> None:
        self._serve(True)

    def _serve(self, body: bool) -> None:
        file = self.root / self.path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        size = file.stat().st_size
        start, end, status = 0, size, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if match:
            start = int(match.group(1))
            end = min(size, int(match.group(2)) + 1) if match.group(2) else size
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{size}-{file.stat().st_mtime_ns}"')
        self.send_header("Connection", "close")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if body:
            self.wfile.flush()
            with open(file, "rb") as f:
                offset = start
                while offset < end:
                    sent = os.sendfile(self.connection.fileno(), f.fileno(), offset, min(end - offset, 64 * MIB))
                    if sent == 0:
                        break
                    offset += sent
        self.close_connection = True


def serve(root: Path) -> tuple[ThreadingHTTPServer, str]:
    handler = type("Handler", (_Handler,), {"root": root})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --------------------------------------------------------------------------- download


def bench_download(work: Path, size_mib: int, repeats: int) -> dict:
    from tunesmith.data.download import Archive, DownloadOptions, RetryPolicy, download_archives
    from tunesmith.data.download.client import fetch, probe

    root = work / "mirror"
    root.mkdir(parents=True, exist_ok=True)
    src = root / "bench.tar"
    if not src.is_file() or src.stat().st_size != size_mib * MIB:
        with open(src, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(MIB))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    archive = Archive("bench.tar", "bench.tar", "", "sha256", digest, src.stat().st_size, "file", "audio")
    server, url = serve(root)
    times: dict[str, list[float]] = {"curl": [], "tunesmith-1conn": [], "tunesmith-4conn": [], "fetch-no-hash": []}
    try:
        for _ in range(repeats):
            for name in times:
                target = Path(tempfile.mkdtemp(dir=work, prefix="dl-"))
                started = time.perf_counter()
                if name == "curl":
                    subprocess.run(["curl", "-sS", "-o", str(target / "bench.tar"), f"{url}/bench.tar"], check=True)
                elif name == "fetch-no-hash":  # diagnostic: the transfer alone, no checksum
                    info = probe(f"{url}/bench.tar", RetryPolicy())
                    fetch(f"{url}/bench.tar", target / "bench.tar", info, url_path="bench.tar", algorithm=None)
                else:
                    options = DownloadOptions(
                        base_url=url,
                        jobs=1,
                        connections=1 if name.endswith("1conn") else 4,
                        min_part_size=16 * MIB,
                        policy=RetryPolicy(retries=2, backoff=0.1),
                        extract=False,
                        progress=False,
                    )
                    report = download_archives([archive], target, options)
                    assert not report["failed"] and report["verified"] == 1, report
                times[name].append(time.perf_counter() - started)
                assert (target / "bench.tar").stat().st_size == size_mib * MIB
                shutil.rmtree(target)
    finally:
        server.shutdown()
        server.server_close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "size_mib": size_mib,
        "repeats": repeats,
        "seconds": times,
        "median_s": med,
        "mib_per_s": {k: size_mib / v for k, v in med.items()},
        "ratio_vs_curl": {k: med[k] / med["curl"] for k in med if k != "curl"},
    }


# --------------------------------------------------------------------------- prepare hf-dataset


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_hf_prepare(work: Path, tracks: int, seconds: float) -> dict:
    import datasets
    import numpy as np
    import soundfile as sf

    from tunesmith.data.prepare import prepare_dataset
    from tunesmith.data.synthetic import render_track, track_params

    folder = work / "hf-audio"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = {"audio": [], "text": [], "genre": []}
    for i in range(tracks):
        params = track_params(i, 0, seconds)
        path = folder / f"track{i:04d}.mp3"
        sf.write(str(path), np.ascontiguousarray(render_track(params, 44100, 1).T), 44100, format="MP3")
        rows["audio"].append({"bytes": path.read_bytes(), "path": path.name})
        rows["text"].append(f"synthetic track {i}")
        rows["genre"].append(str(params.get("genre", "")))
    features = datasets.Features(
        {
            "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "text": datasets.Value("string"),
            "genre": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(rows, features=features).cast_column("audio", datasets.Audio())
    shutil.rmtree(work / "hf-disk", ignore_errors=True)
    ds.save_to_disk(str(work / "hf-disk"))
    del rows, ds
    out: dict[str, dict] = {}
    for name, src, kind in (("hf-dataset", work / "hf-disk", "hf-dataset"), ("folder", folder, "folder")):
        dest = work / f"prepared-{name}"
        shutil.rmtree(dest, ignore_errors=True)
        cpu, wall = _cpu(), time.perf_counter()
        summary = prepare_dataset([src], dest, source=kind, sample_rate=32000, workers=1, progress=False)
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
        audio_s = summary["hours"]["total"] * 3600
        out[name] = {
            "tracks": summary["counts"]["tracks"]["total"],
            "audio_s": round(audio_s, 1),
            "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2),
            "x_realtime_per_core": round(audio_s / cpu, 1),
            "x_realtime_wall": round(audio_s / wall, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tracks", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--skip-prepare", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "download": bench_download(args.work, args.size_mib, args.repeats),
    }
    if not args.skip_prepare:
        result["prepare_hf"] = bench_hf_prepare(args.work, args.tracks, args.seconds)
    (args.work / "results.json").write_text(json.dumps(result, indent=1))
    d = result["download"]
    print(f"## download: {d['size_mib']} MiB from a loopback server, {d['repeats']} repeats, alternating\n")
    print("| client | median s | MiB/s | time / curl |")
    print("| --- | --- | --- | --- |")
    for name, sec in d["median_s"].items():
        ratio = d["ratio_vs_curl"].get(name, 1.0)
        print(f"| {name} | {sec:.3f} | {d['mib_per_s'][name]:.0f} | {ratio:.2f} |")
    if "prepare_hf" in result:
        print("\n## prepare, one worker, 32 kHz mono 10 s segments\n")
        print("| source | tracks | audio s | CPU s | wall s | × real time per core | × real time (wall) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, r in result["prepare_hf"].items():
            print(
                f"| {name} | {r['tracks']} | {r['audio_s']} | {r['cpu_s']} | {r['wall_s']} | "
                f"{r['x_realtime_per_core']} | {r['x_realtime_wall']} |"
            )
    print(f"\n{result['machine']}, {result['date']}; JSON: {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
