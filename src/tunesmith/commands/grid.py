"""`tunesmith grid FILE`: launch, inspect, cancel or clear the runs of a grid file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunesmith.commands.argtypes import number

LAUNCHERS = ("local", "slurm", "submitit-local")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "grid",
        help="run a grid of trainings (grid file: a base command and override combinations), locally or on Slurm",
        description=(
            "Launch the runs of a grid file that are not done or running (launching twice never starts a run "
            "twice: runs are identified by signature), or show/cancel/clear them. Launchers: local (one after "
            "another, or --parallel N with one GPU each), slurm (sbatch through submitit; jobs checkpoint and are "
            "requeued on timeout or preemption and resume exactly). Slurm settings: team config "
            "($TUNESMITH_CONFIG) < the grid file's slurm: < these flags."
        ),
    )
    p.add_argument("file", type=Path, help="grid file (.yaml or .py)")
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--dry-run", action="store_true", help="print the runs (signature, overrides, state); launch nothing"
    )
    action.add_argument("--status", action="store_true", help="each run's state, epoch, best metric and last log line")
    action.add_argument("--cancel", action="store_true", help="stop the grid's live jobs (they checkpoint first)")
    action.add_argument("--clear", action="store_true", help="delete the grid's run folders, then launch them afresh")
    p.add_argument("--yes", action="store_true", help="with --clear: do not ask")
    p.add_argument("--json", action="store_true", help="with --dry-run/--status: one JSON line per run")
    p.add_argument("--runs-dir", type=Path, default=None, help="where run folders live (default: grid file, "
                   "$TUNESMITH_RUNS, team config runs_dir, ./runs)")  # fmt: skip
    p.add_argument("--launcher", choices=LAUNCHERS, default=None, help="local (default) | slurm | submitit-local")
    local = p.add_argument_group("local launcher")
    local.add_argument("--parallel", type=number(int, ge=1), default=1, help="runs at once (one GPU each)")
    local.add_argument("--gpus", default=None, help="GPU ids to hand out, e.g. 0,1,2,3 (default: all visible)")
    slurm = p.add_argument_group("slurm launcher (override the team config and the grid file)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--qos", default=None)
    slurm.add_argument("--constraint", default=None)
    slurm.add_argument("--time", dest="time_min", type=number(int, ge=1), default=None, help="minutes per job")
    slurm.add_argument("--nodes", type=number(int, ge=1), default=None)
    slurm.add_argument("--gpus-per-node", type=number(int, ge=0), default=None)
    slurm.add_argument("--tasks-per-node", type=number(int, ge=1), default=None, help="default: GPUs per node or 1")
    slurm.add_argument("--cpus-per-task", type=number(int, ge=1), default=None)
    slurm.add_argument("--mem-gb", type=number(float, gt=0), default=None)
    slurm.add_argument("--max-requeues", type=number(int, ge=0), default=None)
    p.set_defaults(func=run)


def _fmt_best(best: dict | None) -> str:
    if not best or best.get("value") is None:
        return "-"
    return f"{best.get('metric')}={best['value']:.4g}@{best.get('epoch')}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tunesmith.errors import UserError
    from tunesmith.launch.grid import load_grid
    from tunesmith.launch.plan import plan
    from tunesmith.launch.state import collect_states, read_launch

    grid = load_grid(args.file)
    runs = plan(grid, args.runs_dir)
    states = collect_states([r.run_dir for r in runs])
    if args.dry_run or args.status:
        if args.json:
            for r, s in zip(runs, states, strict=True):
                print(json.dumps({"signature": r.signature, "run_dir": str(r.run_dir), "overrides": r.entry.overrides,
                                  "state": s.state, "epoch": s.epoch, "step": s.step, "best": s.best, "job": s.job,
                                  "reason": s.reason, "last_line": s.last_line}, default=str))  # fmt: skip
            return 0
        if args.dry_run:
            rows = [
                [str(i + 1), r.signature, s.state, r.label] for i, (r, s) in enumerate(zip(runs, states, strict=True))
            ]
            print(table(rows, ["#", "signature", "state", "overrides"]))
            todo = sum(1 for s in states if _to_launch(s))
            print(
                f"{len(runs)} runs of {grid.task}/{grid.preset} in {runs[0].run_dir.parent}; {todo} would be launched"
            )
            return 0
        rows = [
            [str(i + 1), r.signature, s.state, str(s.epoch), str(s.step), _fmt_best(s.best), s.job or "-",
             r.label, _short(s.reason or s.last_line)]
            for i, (r, s) in enumerate(zip(runs, states, strict=True))
        ]  # fmt: skip
        print(table(rows, ["#", "signature", "state", "epoch", "step", "best", "job", "overrides", "last log line"]))
        counts = {name: sum(1 for s in states if s.state == name) for name in dict.fromkeys(s.state for s in states)}
        print(", ".join(f"{n} {name}" for name, n in counts.items()))
        return 0
    if args.cancel:
        from tunesmith.launch.submit import cancel_job

        stopped = 0
        for r, s in zip(runs, states, strict=True):
            live = s.alive or (s.state in ("running", "pending", "preempted") and read_launch(r.run_dir))
            if live and cancel_job(read_launch(r.run_dir), r.run_dir):
                stopped += 1
                print(f"cancelled {r.signature} ({s.job})")
        print(f"{stopped} job(s) cancelled" if stopped else "no live jobs in this grid")
        return 0
    if args.clear:
        import shutil

        from tunesmith.launch.submit import cancel_job

        existing = [r for r in runs if r.run_dir.exists()]
        if existing and not args.yes:
            if not sys.stdin.isatty():
                raise UserError(f"--clear would delete {len(existing)} run folder(s); pass --yes to confirm")
            answer = input(f"delete {len(existing)} run folder(s) under {existing[0].run_dir.parent}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        for r, s in zip(runs, states, strict=True):
            if s.alive:
                cancel_job(read_launch(r.run_dir), r.run_dir)
        for r in existing:
            shutil.rmtree(r.run_dir, ignore_errors=True)
            print(f"deleted {r.run_dir}")
        states = collect_states([r.run_dir for r in runs])
    todo = [r for r, s in zip(runs, states, strict=True) if _to_launch(s)]
    skipped = len(runs) - len(todo)
    print(f"launching {len(todo)} of {len(runs)} runs" + (f" ({skipped} done or running)" if skipped else ""))
    if not todo:
        return 0
    return _launch(args, grid, todo)


def _to_launch(state) -> bool:
    """Not done, and no live job holds it (a pending run whose job is queued, a running or preempted one)."""
    if state.state == "done" or state.state in ("running", "preempted"):
        return False
    return not (state.state == "pending" and state.alive)


def _short(text: str, width: int = 60) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _launch(args: argparse.Namespace, grid, todo) -> int:
    from tunesmith.team import active_config

    team = active_config()
    launcher = args.launcher or "local"
    if launcher == "local":
        from tunesmith.launch.local import launch_local

        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
        results = launch_local(todo, parallel=args.parallel, gpus=gpus)
        failed = [sig for sig, code in results.items() if code != 0]
        if failed:
            print(
                f"{len(failed)} run(s) did not finish: {', '.join(failed)} (see `tunesmith grid {args.file} --status`)"
            )
            return 1
        return 0
    from tunesmith.launch.submit import check_slurm, merge_slurm, submit_runs

    flags = {k: getattr(args, k) for k in ("partition", "account", "qos", "constraint", "time_min", "nodes",
             "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "max_requeues")}  # fmt: skip
    params = merge_slurm(team.slurm, grid.slurm, flags)
    if launcher == "slurm":
        check_slurm(params, team.describe_source())
    submit_runs(todo, launcher, params)
    print(f"follow them with `tunesmith grid {args.file} --status`")
    return 0
