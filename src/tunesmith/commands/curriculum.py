"""`tunesmith curriculum TASK PRESET`: train in stages of growing segment length (see tunesmith.tasks.curriculum)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tunesmith.tasks.curriculum import current_stage, format_plan, parse_stages, plan, run_curriculum


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "curriculum",
        help="train in stages of growing segment length, each from the previous stage's best weights",
        description=(
            "Curriculum training. Each stage is a normal run with its own segment length, batch size and epochs; "
            "stage k>1 starts from stage k-1's best weights (init_from). The same command again resumes."
        ),
    )
    p.add_argument("task", help="lm (any task whose dataset has segment_seconds and batch_size)")
    p.add_argument("preset")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument(
        "--stages",
        default="short=10:128:50,medium=20:64:50,full=30:32:100",
        help="[NAME=]SECONDS:BATCH:EPOCHS,... or a YAML file (default: %(default)s)",
    )
    p.add_argument("--auto", action="store_true", help="detect the current stage from existing runs and continue")
    p.add_argument("--dry-run", action="store_true", help="print the plan (stages, run folders, states) and exit")
    p.add_argument("--stage", type=int, help="run only from this stage (1-based)")
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stages = parse_stages(args.stages)
    if args.dry_run:
        planned = plan(args.task, args.preset, args.overrides, stages, args.runs_dir)
        if args.json:
            rows = [
                {**dataclasses.asdict(p.stage), "index": p.index, "state": p.state, "run_dir": str(p.run_dir)}
                for p in planned
            ]
            print(json.dumps({"stages": rows, "current": current_stage(planned)}))
        else:
            print(format_plan(planned))
            current = current_stage(planned)
            print(f"next: stage {current}" if current else "all stages finished", file=sys.stderr)
        return 0
    results = run_curriculum(
        args.task, args.preset, args.overrides, stages, runs_dir=args.runs_dir, start=args.stage, auto=args.auto
    )
    for r in results:
        print(f"run folder: {r['run_dir']} (epoch {r['epoch']}, step {r['step']}, best {r['best']})")
    return 0
