"""Curriculum training: stages of growing segment length, each starting from the previous stage's best weights.

A stage is an ordinary run (``tunesmith train TASK PRESET ...``) with its own segment length, batch
size and epochs, plus ``init_from=<previous stage's run>`` after the first. Because runs resume and
their folders are named by their config, the plan is fully determined by (task, preset, overrides,
stages): ``--dry-run`` prints it with each stage's state, ``--auto`` finds the first stage that is
not finished and continues from there.

    tunesmith curriculum lm tiny data=DIR codec=RUN --stages 10:128:50,20:64:50,30:32:100 [--auto|--dry-run]
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("tunesmith.tasks.curriculum")


@dataclasses.dataclass
class Stage:
    """One curriculum stage: crops of ``segment_seconds``, ``batch_size`` per device, ``epochs``."""

    name: str
    segment_seconds: float
    batch_size: int
    epochs: int


DEFAULT_STAGES = (
    Stage("short", 10.0, 128, 50),
    Stage("medium", 20.0, 64, 50),
    Stage("full", 30.0, 32, 100),
)


@dataclasses.dataclass
class PlannedStage:
    index: int  # 1-based
    stage: Stage
    overrides: list[str]
    run_dir: Path
    state: str  # finished | partial (epoch e/E) | failed | pending
    epoch: int


def parse_stages(spec: str) -> list[Stage]:
    """``"10:128:50,20:64:50"`` (seconds:batch:epochs, optionally ``name=`` before each) or a YAML file
    holding a list of {name, segment_seconds, batch_size, epochs}."""
    from tunesmith.errors import UserError

    path = Path(spec)
    if path.suffix in (".yaml", ".yml", ".json"):
        import yaml

        if not path.is_file():
            raise UserError(f"--stages {spec}: no such file")
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, list) or not data:
            raise UserError(f"{path}: expected a list of stages (name, segment_seconds, batch_size, epochs)")
        stages = []
        for i, entry in enumerate(data, start=1):
            try:
                stages.append(
                    Stage(
                        str(entry.get("name", f"stage{i}")),
                        float(entry["segment_seconds"]),
                        int(entry["batch_size"]),
                        int(entry["epochs"]),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise UserError(f"{path}: stage {i}: needs segment_seconds, batch_size and epochs ({err})") from None
    else:
        stages = []
        for i, part in enumerate(p.strip() for p in spec.split(",") if p.strip()):
            name, _, body = part.rpartition("=")
            fields = body.split(":")
            try:
                seconds, batch, epochs = float(fields[0]), int(fields[1]), int(fields[2])
                if len(fields) != 3:
                    raise ValueError
            except (ValueError, IndexError):
                raise UserError(
                    f"--stages: {part!r} is not SECONDS:BATCH:EPOCHS (e.g. 10:128:50,20:64:50,30:32:100)"
                ) from None
            stages.append(Stage(name or f"stage{i + 1}", seconds, batch, epochs))
    if not stages:
        raise UserError("--stages: no stage given")
    for s in stages:
        if s.segment_seconds <= 0 or s.batch_size < 1 or s.epochs < 1:
            raise UserError(f"stage {s.name}: segment_seconds, batch_size and epochs must be positive ({s})")
    return stages


def _run_state(run_dir: Path) -> tuple[str, int]:
    from tunesmith.artifacts.runs import STATUS_FILE, read_json

    status = read_json(run_dir / STATUS_FILE) or {}
    state = str(status.get("state", ""))
    epoch = int(status.get("epoch") or 0)
    if not run_dir.is_dir() or not status:
        return "pending", 0
    if state == "finished":
        return "finished", epoch
    if state in ("failed", "aborted"):
        return f"{state} at epoch {epoch}", epoch
    return f"partial (epoch {epoch})", epoch


def plan(
    task: str, preset: str, overrides: list[str], stages: list[Stage] | tuple[Stage, ...], runs_dir: Path | None = None
) -> list[PlannedStage]:
    """Each stage's overrides, run folder and state (from its status.json)."""
    from tunesmith.artifacts.runs import default_runs_dir, signature
    from tunesmith.config import SEGMENT_SECONDS, has_key, resolve
    from tunesmith.errors import UserError
    from tunesmith.tasks import solver_class

    runs_dir = Path(runs_dir or default_runs_dir())
    cls = solver_class(task)
    if not has_key(cls.config_class, SEGMENT_SECONDS):
        raise UserError(f"task {task!r} has no {SEGMENT_SECONDS} (crop length in seconds): no curriculum for it")
    planned: list[PlannedStage] = []
    previous: Path | None = None
    for index, stage in enumerate(stages, start=1):
        stage_overrides = [
            *overrides,
            f"{SEGMENT_SECONDS}={stage.segment_seconds}",
            f"dataset.batch_size={stage.batch_size}",
            f"train.epochs={stage.epochs}",
        ]
        if previous is not None:
            stage_overrides.append(f"init_from={previous}")
        resolved = resolve(task, cls.config_class, preset, stage_overrides)
        run_dir = runs_dir / task / signature(resolved)
        state, epoch = _run_state(run_dir)
        planned.append(PlannedStage(index, stage, stage_overrides, run_dir, state, epoch))
        previous = run_dir
    return planned


def current_stage(planned: list[PlannedStage]) -> int | None:
    """1-based index of the first stage that is not finished (None when all are)."""
    return next((p.index for p in planned if p.state != "finished"), None)


def format_plan(planned: list[PlannedStage]) -> str:
    rows = [("stage", "segment", "batch", "epochs", "state", "run")]
    for p in planned:
        s = p.stage
        rows.append(
            (
                f"{p.index} {s.name}",
                f"{s.segment_seconds:g} s",
                str(s.batch_size),
                str(s.epochs),
                p.state,
                str(p.run_dir),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def run_curriculum(
    task: str,
    preset: str,
    overrides: list[str],
    stages: list[Stage] | tuple[Stage, ...] = DEFAULT_STAGES,
    *,
    runs_dir: Path | None = None,
    start: int | None = None,
    stop: int | None = None,
    auto: bool = False,
) -> list[dict[str, Any]]:
    """Train stages ``start..stop`` (1-based, inclusive) in order; ``auto`` starts at the first unfinished one.

    A stage after the first needs its predecessor finished (its best weights seed the stage).
    Returns each trained stage's fit() summary.
    """
    from tunesmith.errors import UserError
    from tunesmith.tasks import build_solver

    planned = plan(task, preset, overrides, stages, runs_dir)
    if auto:
        detected = current_stage(planned)
        if detected is None:
            log.info("curriculum: every stage is finished")
            return []
        log.info("curriculum: continuing at stage %d (%s)", detected, planned[detected - 1].stage.name)
        start = detected
    first, last = start or 1, stop or len(planned)
    if not 1 <= first <= last <= len(planned):
        raise UserError(f"stages {first}..{last} are not within 1..{len(planned)}")
    results = []
    for p in planned[first - 1 : last]:
        if p.index > 1:
            before = planned[p.index - 2]
            state, _ = _run_state(before.run_dir)
            if state != "finished":
                raise UserError(
                    f"stage {p.index} ({p.stage.name}) starts from stage {before.index}'s weights, but that stage is "
                    f"{state}: run it first (or use --auto)"
                )
        log.info(
            "curriculum stage %d/%d (%s): %g s crops, batch %d, %d epochs → %s",
            p.index,
            len(planned),
            p.stage.name,
            p.stage.segment_seconds,
            p.stage.batch_size,
            p.stage.epochs,
            p.run_dir,
        )
        solver = build_solver(task, preset, p.overrides, runs_dir=runs_dir)
        results.append(solver.fit())
    return results
