"""Thread policy on a shared machine: a tiny training with and without a competing busy process.

Runs ``tunesmith train codec tiny`` and ``tunesmith train lm tiny`` (short budgets) with this tree's
thread policy (threads = usable CPUs, OpenMP passive wait) and with an earlier commit's (torch's
defaults: every core, libgomp spin-waiting), alternating, first on an idle machine, then while one
process busy-loops on a core (what another job on a shared box does). Reports each run's wall and
CPU seconds (whole process, start-up included).

    python benchmarks/threads.py                   # against 7d198e6 (before the thread policy)
    python benchmarks/threads.py --repeats 3 --updates 40

Needs git and an otherwise idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_loop import DEFAULT_BASELINE, ROOT, WORK, checkout, shared_inputs, tunesmith  # noqa: E402

BUSY_LOOP = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"


def timed_train(src: Path, argv: list[str], threads_env: str | None) -> tuple[float, float]:
    """(wall s, CPU s) of one ``tunesmith`` process (user + system of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    tunesmith(src, argv, threads_env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision with torch's default threading")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--updates", type=int, default=30, help="updates of one epoch")
    parser.add_argument("--out", type=Path, default=WORK / "threads.json")
    args = parser.parse_args()

    sides = {"baseline": checkout(args.baseline), "this tree": ROOT / "src"}
    data, codec = shared_inputs(sides, None)
    short = ["train.epochs=1", f"train.updates_per_epoch={args.updates}", "train.log.tensorboard=false"]
    commands = {
        "codec": ["train", "codec", "tiny", *short, "check.num_samples=1"],
        "lm": ["train", "lm", "tiny", f"codec={codec}", *short, "dataset.segment_seconds=2"],
    }
    rows = []
    for condition in ("idle", "one busy process"):
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if condition != "idle" else None
        try:
            for repeat in range(args.repeats):
                for task, argv in commands.items():
                    order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
                    for side in order:
                        runs = WORK / f"threads-runs-{side.replace(' ', '-')}"
                        full = [*argv, f"data={data[side]}", "--runs-dir", str(runs), "--fresh"]
                        wall, cpu = timed_train(sides[side], full, None)
                        rows.append({"condition": condition, "task": task, "side": side, "wall_s": wall, "cpu_s": cpu})
                        print(f"{condition:16s} {task:5s} {side:9s} wall {wall:6.1f} s  CPU {cpu:6.1f} s", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    table = []
    for condition in ("idle", "one busy process"):
        for task in commands:
            cell = {}
            for side in sides:
                picked = [r for r in rows if (r["condition"], r["task"], r["side"]) == (condition, task, side)]
                cell[side] = (
                    statistics.median(r["wall_s"] for r in picked),
                    statistics.median(r["cpu_s"] for r in picked),
                )
            table.append((condition, task, cell))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline": args.baseline, "updates": args.updates, "runs": rows}, indent=2))
    print("\n| condition | task | baseline wall / CPU s | this tree wall / CPU s | wall ratio |")
    print("| --- | --- | --- | --- | --- |")
    for condition, task, cell in table:
        (bw, bc), (nw, nc) = cell["baseline"], cell["this tree"]
        print(f"| {condition} | {task} tiny | {bw:.1f} / {bc:.1f} | {nw:.1f} / {nc:.1f} | {nw / bw:.2f} |")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
