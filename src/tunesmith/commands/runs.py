"""`tunesmith runs list` and `tunesmith runs info SIG`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("runs", help="list runs, or show one run's config delta, status and checkpoints")
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION")
    lst = sub.add_parser("list", help="one line per run")
    lst.add_argument("--task", default=None, help="only runs of this task")
    lst.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    lst.add_argument("--runs-dir", type=Path, default=None, help="where run folders live (default ./runs)")
    info = sub.add_parser("info", help="details of one run (path, task/sig, or signature prefix)")
    info.add_argument("run")
    info.add_argument("--json", action="store_true")
    info.add_argument("--runs-dir", type=Path, default=None, help="where run folders live (default ./runs)")
    info.add_argument("--tail", action="store_true", help="print the end of train.log and follow it while the run runs")
    compare = sub.add_parser("compare", help="runs side by side: config delta, metrics, overlaid loss curves (HTML)")
    compare.add_argument("runs", nargs="+", help="two or more runs (signature, task/sig or run folder)")
    compare.add_argument("--html", type=Path, default=None, help="page to write (default: compare_<sigs>.html here)")
    compare.add_argument("--runs-dir", type=Path, default=None, help="where run folders live (default ./runs)")
    p.set_defaults(func=run)


def _fmt_best(best: dict | None) -> str:
    if not best:
        return "-"
    return f"{best.get('metric')}={best.get('value'):.4g} @{best.get('epoch')}"


def _fmt_delta(delta: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in delta.items()) or "(preset defaults)"


def _evaluate_lines(run_dir: Path, task: str | None) -> list[str]:
    """One line per eval split from the run's last evaluate record (history.jsonl)."""
    last: dict = {}
    try:
        with (run_dir / "history.jsonl").open(encoding="utf-8") as f:
            for line in f:
                if '"evaluate"' in line:
                    record = json.loads(line)
                    last = record if record.get("stage") == "evaluate" else last
    except (OSError, ValueError):
        return []
    from tunesmith.review.charts import record_metrics

    values = record_metrics(last)
    metrics = {k: v for k, v in values.items() if "/" in k}
    if task == "midi":
        from tunesmith.tasks.midi_metrics import split_summary_lines

        tasks = sorted({k.split("/")[1] for k in metrics if k.count("/") == 2})
        return [f"epoch {last.get('epoch')} {line}" for line in split_summary_lines(metrics, tasks)]
    splits: dict[str, list[str]] = {}
    for key, value in metrics.items():
        split, name = key.split("/", 1)
        splits.setdefault(split, []).append(f"{name}={value:.4g}")
    lines = [f"epoch {last.get('epoch')} {split}: " + " ".join(items) for split, items in splits.items()]
    flat = {k: v for k, v in values.items() if "/" not in k}
    if flat:  # an audio LM's generation metrics (fad, clap, kld, chroma, wer, ...)
        lines.append(f"epoch {last.get('epoch')}: " + " ".join(f"{k}={v:.4g}" for k, v in flat.items()))
    return lines


def run(args: argparse.Namespace) -> int:
    from tunesmith.artifacts.runs import find_run, list_runs, run_info

    if args.runs_command == "compare":
        from tunesmith.launch.compare import compare_html, compare_text, load_runs

        runs = load_runs(args.runs, args.runs_dir)
        print(compare_text(runs))
        out = args.html or Path("compare_" + "_".join(r.signature for r in runs)[:120] + ".html")
        out.write_text(compare_html(runs), encoding="utf-8")
        print(f"curves: {out}")
        return 0
    if args.runs_command == "info" and args.tail:
        from tunesmith.launch.state import follow_log

        follow_log(find_run(args.run, args.runs_dir))
        return 0
    if args.runs_command == "info":
        info = run_info(find_run(args.run, args.runs_dir))
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            return 0
        print(f"run        {info['dir']}")
        print(f"task       {info['task']} (preset {info['preset']}, signature {info['signature']})")
        print(f"status     {info['status']}, epoch {info['epoch']}, step {info['step']}")
        print(f"best       {_fmt_best(info['best'])}")
        print(f"checkpoint {info['last_checkpoint'] or '-'}")
        print(f"wall time  {info['wall_time_s']:.0f} s")
        print("delta      " + _fmt_delta(info["delta"]))
        for line in _evaluate_lines(Path(info["dir"]), info["task"]):  # the last evaluate stage, per split
            print("evaluate   " + line)
        return 0
    rows = [r for r in list_runs(getattr(args, "runs_dir", None)) if getattr(args, "task", None) in (None, r["task"])]
    if getattr(args, "json", False):
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    if not rows:
        print("no runs yet (tunesmith train TASK PRESET ...)")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("task", "sig", "preset", "status", "epoch", "step", "best", "delta")
    for r in rows:
        table.add_row(
            r["task"],
            r["signature"],
            r["preset"],
            r["status"],
            str(r["epoch"]),
            str(r["step"]),
            _fmt_best(r["best"]),
            _fmt_delta(r["delta"]),
        )
    Console().print(table)
    return 0
