"""`tunesmith train TASK PRESET [key=value ...]`: train (or resume) a run of a task."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a codec, LM or MIDI GPT (the same command again resumes)",
        description=(
            "Train TASK from PRESET with key=value overrides, e.g. "
            "`tunesmith train lm tiny data=DIR codec=RUN optim.lr=3e-4 dataset.batch_size=8`. "
            "The run folder is runs/<task>/<signature>; running the same command again resumes it. "
            "init_from=RUN_OR_MODEL starts a NEW run from those weights only; --fresh deletes the run and restarts. "
            "Multi-GPU/multi-node: `torchrun --nproc-per-node N -m tunesmith train ...`. "
            "Stopping: SIGINT (Ctrl-C), SIGTERM or SIGUSR1 (Slurm's pre-timeout signal) finish the current "
            "update, write the last checkpoint (mid-epoch too), mark the run 'interrupted' and exit with code 3; "
            "the same command resumes at the next update. A second Ctrl-C stops at once (exit code 130)."
        ),
    )
    p.add_argument("task", nargs="?", help="codec | lm | midi")
    p.add_argument("preset", nargs="?", help="preset name (see --list-presets) or a YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    p.add_argument(
        "--runs-dir", type=Path, default=None, help="where run folders live (default: ./runs or $TUNESMITH_RUNS)"
    )
    p.add_argument("--fresh", action="store_true", help="delete this run's folder and start over")
    p.add_argument("--force", action="store_true", help="resume even if the stored resolved config differs")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config and the run folder, then exit"
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable summary at the end")
    p.add_argument("--list-presets", action="store_true", help="list the presets of TASK (or of every task) and exit")
    p.add_argument(
        "--from",
        dest="from_run",
        metavar="SIG",
        default=None,
        help="start a new run from run SIG's stored config plus the key=value changes given (no TASK PRESET)",
    )
    p.set_defaults(func=run)


def list_presets_text(task: str | None) -> str:
    """Presets per task, one line each: name and the first comment line of its YAML."""
    from tunesmith.config import list_presets, preset_description
    from tunesmith.tasks import TASKS, solver_class

    tasks = [task] if task else [t for t in TASKS if t != "toy"]
    if task:
        solver_class(task)  # an unknown task: the registry's message
    lines = []
    for name in tasks:
        presets = list_presets(name)
        lines.append(f"{name}:")
        width = max((len(p) for p in presets), default=0)
        lines.extend(f"  {p.ljust(width)}  {preset_description(name, p)}".rstrip() for p in presets)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tunesmith.artifacts.runs import default_runs_dir, signature
    from tunesmith.config import resolve, to_dict
    from tunesmith.errors import UserError
    from tunesmith.tasks import build_solver, solver_class

    if args.list_presets:
        print(list_presets_text(args.task))
        return 0
    if args.from_run:  # `train --from SIG key=value ...`: argparse put the first changes in task/preset
        from tunesmith.launch.rerun import overrides_from_run

        changes = [a for a in (args.task, args.preset, *args.overrides) if a]
        args.task, args.preset, args.overrides = overrides_from_run(args.from_run, changes, args.runs_dir)
    if not args.task or not args.preset:
        raise UserError("train needs TASK and PRESET, e.g. `tunesmith train midi tiny data=DIR` (see --list-presets)")
    if args.print_config:
        cls = solver_class(args.task)
        resolved = resolve(args.task, cls.config_class, args.preset, args.overrides)
        runs_dir = args.runs_dir or default_runs_dir()
        print(
            json.dumps(
                {
                    "run_dir": str(Path(runs_dir) / args.task / signature(resolved)),
                    "delta": {k: v for k, (_, v) in resolved.delta().items()},
                    "config": to_dict(resolved.config),
                },
                indent=2,
            )
        )
        return 0
    solver = build_solver(
        args.task, args.preset, args.overrides, runs_dir=args.runs_dir, fresh=args.fresh, force=args.force
    )
    try:
        result = solver.fit()
    finally:
        from tunesmith.engine.distributed import cleanup

        cleanup()
    if args.json and solver.dist.is_main:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, default=str))
    elif solver.dist.is_main:
        print(
            f"run folder: {result['run_dir']} (epoch {result['epoch']}, step {result['step']}, best {result['best']})"
        )
    return 0
