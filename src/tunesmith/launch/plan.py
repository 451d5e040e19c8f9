"""From a grid to its runs: each entry's resolved config, signature and run folder, exactly as
``tunesmith train`` computes them (tunesmith.config.resolve + tunesmith.artifacts.runs.signature)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from tunesmith.artifacts.runs import default_runs_dir, signature
from tunesmith.config import ConfigError, is_math_key, parse_overrides, resolve
from tunesmith.errors import UserError
from tunesmith.launch.grid import Grid, GridEntry, key_line
from tunesmith.tasks import solver_class


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of a grid: the ``tunesmith train`` arguments that start (or resume) it and where it lives."""

    entry: GridEntry
    task: str
    preset: str
    signature: str
    run_dir: Path
    overrides: list[str]  # the base command's, then the entry's (later wins)

    def train_args(self) -> list[str]:
        """Arguments of ``tunesmith train`` (after the word ``train``)."""
        return [self.task, self.preset, *self.overrides, "--runs-dir", str(self.run_dir.parent.parent)]

    @property
    def label(self) -> str:
        return " ".join(self.entry.override_args()) or "(base command)"


def plan(grid: Grid, runs_dir: str | Path | None = None) -> list[PlannedRun]:
    """Resolve every entry (an unknown key names the closest one and the grid line) and check that no
    two entries land on one signature (an override that changes nothing the run computes)."""
    runs_dir = Path(runs_dir or grid.runs_dir or default_runs_dir())
    cls = solver_class(grid.task)
    planned: list[PlannedRun] = []
    seen: dict[str, PlannedRun] = {}
    for entry in grid.entries:
        overrides = [*grid.base_overrides, *entry.override_args()]
        try:
            resolved = resolve(grid.task, cls.config_class, grid.preset, overrides)
        except ConfigError as err:
            raise UserError(f"{grid.where(_error_line(grid, entry, str(err)))}: {err}") from None
        sig = signature(resolved)
        run = PlannedRun(entry, grid.task, grid.preset, sig, runs_dir / grid.task / sig, overrides)
        if sig in seen:
            raise UserError(_duplicate_message(grid, seen[sig], run, resolved.delta()))
        seen[sig] = run
        planned.append(run)
    return planned


def _error_line(grid: Grid, entry: GridEntry, message: str) -> int | None:
    """The grid line an error is about: the line of the key it names, else the entry's line."""
    for key in re.findall(r"'([A-Za-z0-9_.]+)'", message) + re.findall(r"^([A-Za-z0-9_.]+)=", message):
        if key in entry.overrides:
            return key_line(grid, key, entry)
    for key in entry.overrides:
        if key in message:
            return key_line(grid, key, entry)
    return grid.command_line if any(o.split("=", 1)[0] in message for o in grid.base_overrides) else entry.line


def _duplicate_message(grid: Grid, first: PlannedRun, second: PlannedRun, delta: dict) -> str:
    a, b = first.entry.overrides, second.entry.overrides
    differing = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
    base = parse_overrides(grid.base_overrides)
    reasons = []
    for key in differing:
        if not is_math_key(key):
            reasons.append(f"{key} does not change what the run computes (not part of the signature)")
        elif key not in delta:
            reasons.append(f"{key} is set to the preset's default value")
        elif key in base:
            reasons.append(f"{key} is also set in the base command")
    why = "; ".join(reasons) or "their overrides resolve to the same config"
    return (
        f"{grid.where(second.entry.line)}: run {second.entry.index + 1} ({second.label}) has the same signature "
        f"{second.signature} as run {first.entry.index + 1} ({first.label}, line {first.entry.line}): {why}. "
        "Each run of a grid must change the config; drop one or change a key that counts."
    )
