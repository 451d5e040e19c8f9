"""Launch overhead of `tunesmith grid`: what a grid job costs beyond its training.

Every grid job runs ``python -m tunesmith train ...`` in a fresh process, so its fixed cost is the
interpreter, imports, config resolution, run-folder set-up and the final checkpoint. Measured on toy runs
with no training (``train.epochs=0``: the engine sets up, writes status and exits):

    direct         one `tunesmith train toy default train.epochs=0` process (the floor)
    local          `tunesmith grid` with the local launcher, N such runs one after another (per job)
    submitit       the same N runs through submitit's local executor (submit, wait for all; per job, N at once)
    plan           `load_grid` + `plan` of a 100-run grid (signatures of every run, no launch)

    python benchmarks/grid_launch.py --jobs 3

Prints a markdown table and writes JSON (default benchmarks/.work/grid_launch/results.json). Timings are only
meaningful on an idle machine: check `uptime` first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "TUNESMITH_THREADS": "1"}
BASE = "train toy default train.epochs=0"


def grid_file(folder: Path, n: int, tag: str) -> Path:
    path = folder / f"{tag}.yaml"
    seeds = ", ".join(str(i) for i in range(1, n + 1))
    path.write_text(f"command: {BASE}\ngrid:\n  - product:\n      train.seed: [{seeds}]\n")
    return path


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work/grid_launch/results.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="grid_launch_"))
    tunesmith = [sys.executable, "-m", "tunesmith"]
    results: dict[str, float] = {}

    direct = [timed([*tunesmith, "train", "toy", "default", "train.epochs=0", f"train.seed={100 + i}",
                     "--runs-dir", str(work / "direct")]) for i in range(args.jobs)]  # fmt: skip
    results["direct_s_per_job"] = statistics.median(direct)

    local = grid_file(work, args.jobs, "local")
    results["local_s_per_job"] = timed([*tunesmith, "grid", str(local), "--runs-dir", str(work / "local")]) / args.jobs

    os.environ.update({k: ENV[k] for k in ("TUNESMITH_NO_PROGRESS", "OMP_NUM_THREADS", "TUNESMITH_THREADS")})
    from tunesmith.launch.grid import load_grid
    from tunesmith.launch.plan import plan
    from tunesmith.launch.submit import merge_slurm, submit_runs

    runs = plan(load_grid(grid_file(work, args.jobs, "submitit")), work / "submitit")
    start = time.perf_counter()
    jobs = submit_runs(runs, "submitit-local", merge_slurm({"time_min": 30}), echo=lambda _: None)
    for _, job in jobs:
        job.result()
    results["submitit_local_s_per_job"] = (time.perf_counter() - start) / args.jobs

    big = grid_file(work, 100, "big")
    start = time.perf_counter()
    planned = plan(load_grid(big), work / "plan")
    results["plan_100_runs_s"] = time.perf_counter() - start
    assert len({r.signature for r in planned}) == 100

    results.update(jobs=args.jobs, cpus=os.cpu_count() or 0, load_avg_1min=os.getloadavg()[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| measure | seconds |\n| --- | --- |")
    for key in ("direct_s_per_job", "local_s_per_job", "submitit_local_s_per_job", "plan_100_runs_s"):
        print(f"| {key} | {results[key]:.2f} |")
    print(f"\n{args.jobs} jobs, {results['cpus']} CPUs, 1-min load average {results['load_avg_1min']:.1f} at the end")


if __name__ == "__main__":
    main()
