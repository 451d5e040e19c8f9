"""Benchmark `tunesmith serve`: requests/s and latency under concurrency, with and without micro-batching.

The model is the demo's shape (tiny LM preset: 256 wide, 4 layers, on the tiny 16 kHz codec, 4 × 256
codes at 50 Hz) with random weights, built here under benchmarks/.work/serve/ — speed does not depend on
training — or any LM given with --model. For each server setting (--max-batch 1 = one request at a time,
--max-batch 8 = micro-batching) a real `tunesmith serve` process on 127.0.0.1 gets C concurrent clients
× R requests each (same duration and settings, distinct prompts and seeds). Reported per cell: requests/s,
audio seconds generated per wall second, latency p50/p95, mean batch size. The reference is the same
requests generated one by one with Generator.generate in a worker thread of this process, as the server
runs them (no HTTP, no batching).

    python benchmarks/serve.py            # 5 s requests, concurrency 1/4/16, 4 requests per client
    python benchmarks/serve.py --quick    # 1 s requests, concurrency 1/8, 2 requests per client
Prints a markdown table and writes JSON (default benchmarks/.work/serve/results.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "serve"
PROMPTS = (
    "electronic, techno, saw lead, synth bass, drums, 128 bpm, dark",
    "ambient, drone, warm pad, 64 bpm, calm",
    "classical, piano solo, piano, 88 bpm, gentle",
    "jazz, swing, vibraphone, upright bass, 120 bpm, relaxed",
)


def build_model(root: Path) -> Path:
    """A random-weight LM of the tiny preset on a random tiny codec, saved as checkpoints; returns the LM."""
    import torch

    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.config import resolve, to_dict
    from tunesmith.models.codec import build_codec_model
    from tunesmith.models.lm import LMModel, build_vocabularies
    from tunesmith.tasks import solver_class

    lm_dir = root / "lm"
    if (lm_dir / "manifest.json").is_file():
        return lm_dir
    torch.manual_seed(0)
    codec_cfg = resolve("codec", solver_class("codec").config_class, "tiny").config.model
    codec = build_codec_model(codec_cfg)
    ckpt.save_checkpoint(
        root / "codec",
        weights={"model": codec.state_dict()},
        state={"step": 0, "epoch": 0},
        config={"meta": {"task": "codec"}, "config": {"model": to_dict(codec_cfg)}},
    )
    lm_task = resolve("lm", solver_class("lm").config_class, "tiny").config
    lm_cfg = lm_task.model
    lm_cfg.card, lm_cfg.num_codebooks = int(codec.bins), int(codec.n_q)
    conditions = [{lm_cfg.conditioner.text_field: p} for p in PROMPTS]
    model = LMModel(lm_cfg, build_vocabularies(conditions, lm_cfg.conditioner))
    run_cfg = {"codec": str(root / "codec"), "model": to_dict(lm_cfg), "generate": to_dict(lm_task.generate)}
    ckpt.save_checkpoint(
        lm_dir,
        weights={"model": model.state_dict()},
        state={"step": 0, "epoch": 0},
        config={"meta": {"task": "lm"}, "config": run_cfg},
    )
    return lm_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, max_batch: int, max_queue: int, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "tunesmith", "serve", str(model), "--port", str(port)]
    command += ["--max-batch", str(max_batch), "--max-queue", str(max_queue), "--batch-wait-ms", "15"]
    command += ["--log-level", "warning"]
    proc = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start in 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def load_run(url: str, clients: int, per_client: int, duration: float) -> dict:
    """``clients`` concurrent clients × ``per_client`` sequential requests; every answer must be 200."""
    import httpx

    async def client(http: httpx.AsyncClient, c: int) -> list[tuple[float, int]]:
        out = []
        for r in range(per_client):
            body = {"prompt": PROMPTS[(c + r) % len(PROMPTS)], "duration": duration, "seed": 1000 * c + r}
            start = time.perf_counter()
            response = await http.post("/v1/generate", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"request failed: {response.status_code} {response.text[:200]}")
            out.append((time.perf_counter() - start, int(response.headers["x-batch-size"])))
        return out

    async def run() -> list[tuple[float, int]]:
        limits = httpx.Limits(max_connections=clients + 4)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
            results = await asyncio.gather(*(client(http, c) for c in range(clients)))
        return [x for xs in results for x in xs]

    start = time.perf_counter()
    done = asyncio.run(run())
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in done)
    return {
        "clients": clients,
        "requests": len(done),
        "wall_s": wall,
        "requests_per_s": len(done) / wall,
        "audio_s_per_s": len(done) * duration / wall,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "mean_batch": statistics.fmean(b for _, b in done),
    }


def reference(model: Path, requests: int, duration: float) -> dict:
    """The same kind of requests generated one at a time in-process (no server, no batching)."""
    from tunesmith.inference.lm import Generator
    from tunesmith.serve.app import model_defaults
    from tunesmith.serve.queue import Limits, generation_thread

    def one_by_one() -> float:
        generator = Generator.from_path(model)
        defaults = model_defaults(generator, Limits(max_top_k=int(generator.model.card)))  # what the server uses
        settings = {k: defaults[k] for k in ("cfg", "temperature", "top_k", "top_p")}
        generator.generate([{"prompt": PROMPTS[0], "duration": 0.1, **settings}])  # warm-up
        start = time.perf_counter()
        for i in range(requests):
            generator.generate([{"prompt": PROMPTS[i % len(PROMPTS)], "duration": duration, "seed": i, **settings}])
        return time.perf_counter() - start

    # loaded and run on one worker thread, as the server does (see tunesmith.serve.queue.generation_thread)
    with generation_thread() as pool:
        wall = pool.submit(one_by_one).result()
    return {
        "requests": requests,
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "audio_s_per_s": requests * duration / wall,
    }


def markdown(results: dict) -> str:
    ref = results["reference"]
    lines = [
        f"`tunesmith serve`, tiny LM shape, {results['duration_s']:g} s per request "
        f"(CPU threads {results['machine']['threads']}, load {results['machine']['load_avg_1min']:.1f})",
        "",
        "| server | clients | requests | req/s | audio s/s | p50 s | p95 s | mean batch |",
        "|---|---|---|---|---|---|---|---|",
        f"| in-process Generator, one by one (reference) | 1 | {ref['requests']} | {ref['requests_per_s']:.2f} | "
        f"{ref['audio_s_per_s']:.2f} | | | 1 |",
    ]
    for row in results["runs"]:
        lines.append(
            f"| --max-batch {row['max_batch']} | {row['clients']} | {row['requests']} | {row['requests_per_s']:.2f} | "
            f"{row['audio_s_per_s']:.2f} | {row['latency_p50_s']:.2f} | {row['latency_p95_s']:.2f} | "
            f"{row['mean_batch']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s requests, concurrency 1 and 8, 2 per client")
    parser.add_argument("--model", type=Path, default=None, help="an LM to serve (default: random tiny-shape LM)")
    parser.add_argument("--out", type=Path, default=WORK / "results.json", help="JSON results file")
    args = parser.parse_args()
    os.environ.setdefault("TUNESMITH_NO_PROGRESS", "1")
    import torch

    WORK.mkdir(parents=True, exist_ok=True)
    model = args.model or build_model(WORK / "model")
    duration = 1.0 if args.quick else 5.0
    concurrency = (1, 8) if args.quick else (1, 4, 16)
    per_client = 2 if args.quick else 4
    results: dict = {
        "quick": args.quick,
        "model": str(model),
        "duration_s": duration,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
        },
        "runs": [],
    }
    print("reference: in-process generation…", file=sys.stderr)
    results["reference"] = reference(model, 2 * per_client, duration)
    for max_batch in (1, 8):
        proc, url = start_server(model, max_batch, max(concurrency) * 2, WORK / f"server-{max_batch}.log")
        try:
            for clients in concurrency:
                print(f"--max-batch {max_batch}, {clients} clients…", file=sys.stderr)
                results["runs"].append({"max_batch": max_batch, **load_run(url, clients, per_client, duration)})
        finally:
            stop_server(proc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nJSON: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
