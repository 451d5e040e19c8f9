"""What the re-check of a machine that got busy after start costs a training loop.

Every progress update polls ``tunesmith.runtime.LoadMonitor``: a clock read while no check is due, and
one ``/proc/stat`` + ``/proc/self`` reading (no sleep) when one is (at most every 30 s in training). This
times both against a tiny LM-sized update, and shows what a due check measures beside a busy process.

    python benchmarks/load_monitor.py               # 200,000 idle polls, 2,000 due polls
    python benchmarks/load_monitor.py --polls 20000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from tunesmith.runtime import LoadMonitor, cpu_times

BUSY_LOOP = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"


def per_call(fn, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200_000, help="idle polls timed (due polls: 1 %% of it)")
    args = parser.parse_args()
    idle = LoadMonitor(threads=2, cpus=2, every_s=3600.0)
    idle.poll()  # the first reading; then nothing is due for an hour
    due = LoadMonitor(threads=2, cpus=2, every_s=0.0, repeat_s=1e9)
    due.poll()
    idle_s = per_call(idle.poll, args.polls)
    due_s = per_call(due.poll, max(1, args.polls // 100))
    print(f"poll, nothing due: {idle_s * 1e6:.2f} µs")
    print(f"poll, reading due: {due_s * 1e6:.1f} µs (/proc/stat + own CPU time incl. live children)")
    print("training loop: at most one due reading per 30 s, so per 30 s of training at 10 updates/s "
          f"{(300 * idle_s + due_s) * 1e3:.3f} ms = {(300 * idle_s + due_s) / 30 * 100:.5f} % of the time")  # fmt: skip
    if cpu_times() is not None:
        spinner = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        try:
            time.sleep(0.3)
            monitor = LoadMonitor(threads=2, cpus=2, every_s=0.0)
            monitor.poll()
            time.sleep(2.0)
            message = monitor.poll()
        finally:
            spinner.kill()
            spinner.wait()
        print(f"beside one busy-looping process: others use {monitor.others:.2f} CPUs; warning: {message}")


if __name__ == "__main__":
    main()
