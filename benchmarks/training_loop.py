"""The engine's training loop, this tree against an earlier commit: same commands, same data, one run.

Both sides run ``tunesmith train codec tiny`` and ``tunesmith train lm tiny`` end to end as separate
processes (their own checkout on ``PYTHONPATH``), alternating, on one synthetic dataset and one
codec made once. The figure compared is the train stage's ``targets_per_s`` from each run's
``history.jsonl`` (targets per wall second of the epoch loop: data, forward, backward, optimizer,
logging — not start-up, validation or checkpoints), so it measures the loop the engine owns.

    python benchmarks/training_loop.py                      # against 7d198e6 (before the re-layout)
    python benchmarks/training_loop.py --baseline HEAD~3 --repeats 5 --updates 40

Needs git and an idle machine (one busy process halves a 2-core box: check ``ps`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "training_loop"
DEFAULT_BASELINE = "7d198e6"  # the last commit before the architecture issue's re-layout


def tunesmith(src: Path, argv: list[str], threads: int | None, wait_policy: str | None = None) -> None:
    """``python -m tunesmith ARGV`` with the package from ``src``, ``OMP_NUM_THREADS=threads`` and
    ``OMP_WAIT_POLICY=wait_policy`` unless None (then each side's own default); raises with its output."""
    env = {**os.environ, "PYTHONPATH": str(src), "TUNESMITH_NO_PROGRESS": "1"}
    for name, value in (("OMP_NUM_THREADS", threads), ("OMP_WAIT_POLICY", wait_policy)):
        env.pop(name, None)
        if value is not None:
            env[name] = str(value)
    done = subprocess.run([sys.executable, "-m", "tunesmith", *argv], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"tunesmith {' '.join(argv)} failed ({src}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def checkout(rev: str) -> Path:
    """A worktree of ``rev`` under WORK (made once); returns its src/ folder."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True, check=True)
    folder = WORK / f"tree-{sha.stdout.strip()[:10]}"
    if not folder.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder), rev], check=True)
    return folder / "src"


def train_rate(src: Path, task: str, overrides: list[str], runs: Path, threads: int, wait_policy: str) -> float:
    """Median train-stage targets/s of one fresh run of ``task tiny``."""
    tunesmith(src, ["train", task, "tiny", *overrides, "--runs-dir", str(runs), "--fresh"], threads, wait_policy)
    histories = sorted((runs / task).glob("*/history.jsonl"), key=lambda p: p.stat().st_mtime)
    rates = [
        record["targets_per_s"]
        for line in histories[-1].read_text().splitlines()
        if (record := json.loads(line)).get("stage") == "train" and "targets_per_s" in record
    ]
    if not rates:
        raise SystemExit(f"{histories[-1]}: no train line with targets_per_s")
    return statistics.median(rates)


def shared_inputs(sides: dict[str, Path], threads: int | None) -> tuple[dict[str, Path], Path]:
    """One synthetic dataset (a copy per side, each with the token cache its own code encodes) and one
    tiny codec trained by the baseline (which the newer tree must read): ({side: data dir}, codec run)."""
    import shutil

    base, codec_runs = WORK / "data", WORK / "codec-for-lm"
    if not (base / "dataset.json").is_file():
        tunesmith(sides["baseline"], ["prepare", "--source", "synthetic", "--out", str(base), "--sample-rate",
                                      "16000", "--segment", "2", "--num-tracks", "12", "--track-duration", "6",
                                      "--valid-fraction", "0.2"], threads)  # fmt: skip
    make_codec = ["train", "codec", "tiny", f"data={base}", "train.epochs=1", "train.updates_per_epoch=2"]
    tunesmith(sides["baseline"], [*make_codec, "--runs-dir", str(codec_runs)], threads)  # resumes: once only
    codec = next((codec_runs / "codec").iterdir())
    data = {}
    for side, src in sides.items():
        data[side] = WORK / f"data-{side.replace(' ', '-')}"
        if not data[side].is_dir():
            shutil.copytree(base, data[side])
        tunesmith(src, ["encode", str(data[side]), "--codec", str(codec)], threads)
    return data, codec


def ratio(by_side: dict[str, list[float]]) -> float:
    return statistics.median(by_side["this tree"]) / statistics.median(by_side["baseline"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side and task (alternating)")
    parser.add_argument("--updates", type=int, default=30, help="updates per epoch (2 epochs per run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="the same OpenMP wait policy for both sides, so only the code differs (benchmarks/threads.py "
        "measures the policy itself); 'none' leaves it unset",
    )
    parser.add_argument("--out", type=Path, default=WORK / "results.json")
    args = parser.parse_args()

    sides = {"baseline": checkout(args.baseline), "this tree": ROOT / "src"}
    data, codec = shared_inputs(sides, args.threads)
    short = ["train.epochs=2", f"train.updates_per_epoch={args.updates}", "train.log.tensorboard=false"]
    codec_overrides = [f"data={data['this tree']}", *short, "check.num_samples=1", "train.evaluate_every=0"]
    lm_overrides = [f"codec={codec}", *short, "dataset.segment_seconds=2", "train.generate_every=0"]

    rates: dict[str, dict[str, list[float]]] = {task: {side: [] for side in sides} for task in ("codec", "lm")}
    started = time.time()
    for repeat in range(args.repeats):
        for task, overrides in (("codec", codec_overrides), ("lm", lm_overrides)):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for side in order:
                runs = WORK / f"runs-{side.replace(' ', '-')}"
                own = [f"data={data[side]}"] if task == "lm" else []  # each side reads its own token cache
                wait = None if args.omp_wait_policy.lower() == "none" else args.omp_wait_policy
                rate = train_rate(sides[side], task, [*own, *overrides], runs, args.threads, wait)
                rates[task][side].append(rate)
                print(f"repeat {repeat + 1}/{args.repeats} {task:5s} {side:9s} {rate:9.1f} targets/s", flush=True)
    summary = {
        task: {
            **{f"{side} targets/s (median)": statistics.median(v) for side, v in by_side.items()},
            "ratio this tree / baseline": ratio(by_side),
            "runs": by_side,
        }
        for task, by_side in rates.items()
    }
    result = {"baseline": args.baseline, "updates_per_epoch": args.updates, "threads": args.threads,
              "omp_wait_policy": args.omp_wait_policy,
              "seconds": round(time.time() - started), "tasks": summary}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("\n| task | baseline targets/s | this tree targets/s | ratio |\n| --- | --- | --- | --- |")
    for task, row in summary.items():
        base, new = row["baseline targets/s (median)"], row["this tree targets/s (median)"]
        print(f"| {task} tiny | {base:.1f} | {new:.1f} | {row['ratio this tree / baseline']:.3f} |")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
