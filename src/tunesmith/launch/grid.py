"""Grid files: a base ``tunesmith train`` command and the override combinations to run.

YAML (``grids/toy_lr.yaml``)::

    command: train toy default train.epochs=2     # the base command ("train" is optional)
    runs_dir: runs                                # optional (else --runs-dir, $TUNESMITH_RUNS, team config)
    slurm: {time_min: 30, gpus_per_node: 1}       # optional Slurm settings for this grid
    grid:                                         # blocks; the grid is all of them, in order
      - product: {optim.lr: [0.01, 0.003], model.dim: [16, 32]}   # every combination (4 runs)
      - zip: {optim.lr: [0.1, 0.2], train.seed: [1, 2]}          # pairwise (2 runs)
      - runs: [{optim.lr: 0.05}, {optim.lr: 0.05, model.dim: 8}]  # explicit runs
      - set: {train.seed: 3}                                     # fixed keys for this block...
        product: {optim.lr: [0.01, 0.02]}

A block may hold several of ``product``/``zip``/``runs`` (their combinations are multiplied) and a
``set`` of fixed overrides. Python (``grids/toy_lr.py``) defines ``command`` and either ``grid`` (the
same list of blocks) or ``def grid():`` returning/yielding override mappings. Every mistake is a
:class:`UserError` naming the file, the line and, for an unknown key, the closest valid one.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import runpy
import shlex
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.team import SLURM_KEYS, closest, line_of, load_yaml_with_lines

FILE_KEYS = ("command", "runs_dir", "slurm", "grid")
BLOCK_KEYS = ("product", "zip", "runs", "set")


@dataclasses.dataclass(frozen=True)
class GridEntry:
    """One run of the grid: its overrides (dotted key → value, over the base command's) and its line."""

    index: int
    overrides: dict[str, Any]
    line: int | None = None

    def override_args(self) -> list[str]:
        return [f"{key}={format_value(value)}" for key, value in self.overrides.items()]


@dataclasses.dataclass
class Grid:
    path: Path
    task: str
    preset: str
    base_overrides: list[str]
    entries: list[GridEntry]
    runs_dir: str | None = None
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
    command_line: int | None = None
    key_lines: dict[str, int] = dataclasses.field(default_factory=dict)  # override key → first line naming it

    def where(self, line: int | None) -> str:
        return f"{self.path} line {line}" if line else str(self.path)


def format_value(value: Any) -> str:
    """An override value as ``key=value`` text that config.parse_value reads back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value)
    return str(value)


def parse_command(command: str | list[str], where: str) -> tuple[str, str, list[str]]:
    """``"train lm tiny data=DIR"`` → (task, preset, overrides)."""
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    if words[:1] == ["train"]:
        words = words[1:]
    if len(words) < 2 or "=" in words[0] or "=" in words[1]:
        raise UserError(f"{where}: command must be `train TASK PRESET [key=value ...]`, got {command!r}")
    flags = [w for w in words[2:] if w.startswith("-")]
    if flags:
        raise UserError(f"{where}: command takes key=value overrides only, not {' '.join(flags)} (grid flags go on "
                        "the `tunesmith grid` command line)")  # fmt: skip
    bad = [w for w in words[2:] if "=" not in w]
    if bad:
        raise UserError(f"{where}: {bad[0]!r} in command is not a key=value override")
    return words[0], words[1], words[2:]


def load_grid(path: str | Path) -> Grid:
    """Read a YAML or Python grid file and expand it into its runs (overrides only; see launch.plan)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file {path} does not exist")
    if path.suffix == ".py":
        data, lines = _load_python(path)
    elif path.suffix in (".yaml", ".yml"):
        data, lines = load_yaml_with_lines(path)
    else:
        raise UserError(f"{path}: a grid file is .yaml, .yml or .py")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a grid file is a mapping with {', '.join(FILE_KEYS)}")
    for key in data:
        if key not in FILE_KEYS:
            raise UserError(
                f"{path} line {line_of(lines, (key,))}: unknown grid key {key!r}{closest(str(key), FILE_KEYS)} "
                f"(allowed: {', '.join(FILE_KEYS)})"
            )
    if not data.get("command"):
        raise UserError(f"{path}: no `command:` (the base command, e.g. `train toy default train.epochs=2`)")
    command_line = line_of(lines, ("command",))
    task, preset, base = parse_command(data["command"], f"{path} line {command_line}")
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise UserError(f"{path} line {line_of(lines, ('slurm',))}: slurm is a mapping of settings")
    for key in slurm:
        if key not in SLURM_KEYS:
            raise UserError(
                f"{path} line {line_of(lines, ('slurm', key))}: unknown slurm key {key!r}"
                f"{closest(str(key), tuple(SLURM_KEYS))} (allowed: {', '.join(SLURM_KEYS)})"
            )
    entries = expand(data.get("grid"), path, lines)
    keys = {key for entry in entries for key in entry.overrides}
    key_lines: dict[str, int] = {}
    for where, line in sorted(lines.items(), key=lambda kv: kv[1]):
        if where and isinstance(where[-1], str) and where[-1] in keys:
            key_lines.setdefault(where[-1], line)
    return Grid(
        path=path,
        task=task,
        preset=preset,
        base_overrides=base,
        entries=entries,
        runs_dir=str(data["runs_dir"]) if data.get("runs_dir") else None,
        slurm=dict(slurm),
        command_line=command_line,
        key_lines=key_lines,
    )


def expand(blocks: Any, path: Path, lines: dict[tuple, int]) -> list[GridEntry]:
    """The grid's blocks → its runs, in file order."""
    if blocks is None:
        return [GridEntry(0, {}, line_of(lines, ("command",)))]
    if isinstance(blocks, dict):  # a single block without the list
        blocks = [blocks]
        lines = {(("grid", 0, *k[1:]) if k[:1] == ("grid",) else k): v for k, v in lines.items()}
    if not isinstance(blocks, list):
        raise UserError(f"{path} line {line_of(lines, ('grid',))}: grid is a list of blocks (product/zip/runs/set)")
    entries: list[GridEntry] = []
    for b, block in enumerate(blocks):
        where = ("grid", b)
        if not isinstance(block, dict):
            raise UserError(
                f"{path} line {line_of(lines, where)}: each grid block is a mapping ({', '.join(BLOCK_KEYS)})"
            )
        for key in block:
            if key not in BLOCK_KEYS:
                raise UserError(
                    f"{path} line {line_of(lines, (*where, key))}: unknown block key {key!r}"
                    f"{closest(str(key), BLOCK_KEYS)} (allowed: {', '.join(BLOCK_KEYS)})"
                )
        fixed = _mapping(block.get("set") or {}, path, lines, (*where, "set"))
        parts = []
        if "product" in block:
            parts.append(_product(block["product"], path, lines, (*where, "product")))
        if "zip" in block:
            parts.append(_zip(block["zip"], path, lines, (*where, "zip")))
        if "runs" in block:
            parts.append(_runs(block["runs"], path, lines, (*where, "runs")))
        if not parts:
            parts.append([({}, line_of(lines, where))])
        for combo in itertools.product(*parts):
            overrides = dict(fixed)
            line = line_of(lines, where)
            for part, part_line in combo:
                overrides.update(part)
                line = part_line or line
            entries.append(GridEntry(len(entries), overrides, line))
    if not entries:
        raise UserError(f"{path}: the grid has no runs")
    return entries


def _mapping(value: Any, path: Path, lines: dict, where: tuple) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{path} line {line_of(lines, where)}: {where[-1]} is a mapping of key → value")
    return {str(k): v for k, v in value.items()}


def _product(value: Any, path: Path, lines: dict, where: tuple) -> list[tuple[dict, int | None]]:
    axes = _axes(value, path, lines, where)
    keys = list(axes)
    return [(dict(zip(keys, combo, strict=True)), line_of(lines, where)) for combo in itertools.product(*axes.values())]


def _zip(value: Any, path: Path, lines: dict, where: tuple) -> list[tuple[dict, int | None]]:
    axes = _axes(value, path, lines, where)
    sizes = {k: len(v) for k, v in axes.items()}
    if len(set(sizes.values())) > 1:
        raise UserError(
            f"{path} line {line_of(lines, where)}: zip lists must have the same length, got "
            + ", ".join(f"{k}: {n}" for k, n in sizes.items())
        )
    keys = list(axes)
    return [(dict(zip(keys, combo, strict=True)), line_of(lines, where)) for combo in zip(*axes.values(), strict=True)]


def _runs(value: Any, path: Path, lines: dict, where: tuple) -> list[tuple[dict, int | None]]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{path} line {line_of(lines, where)}: runs is a non-empty list of key → value mappings")
    return [(_mapping(item, path, lines, (*where, i)), line_of(lines, (*where, i))) for i, item in enumerate(value)]


def _axes(value: Any, path: Path, lines: dict, where: tuple) -> dict[str, list]:
    mapping = _mapping(value, path, lines, where)
    for key, values in mapping.items():
        if not isinstance(values, list) or not values:
            raise UserError(
                f"{path} line {line_of(lines, (*where, key))}: {key} needs a non-empty list of values, got {values!r}"
            )
    return mapping


# --------------------------------------------------------------------------- Python grid files


def _load_python(path: Path) -> tuple[dict, dict[tuple, int]]:
    """Run the grid module; ``grid`` may be a list of blocks or a function giving override mappings."""
    try:
        module = runpy.run_path(str(path), run_name="tunesmith_grid")
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's file: name it and the error
        raise UserError(f"{path}: running the grid file failed: {type(err).__name__}: {err}") from None
    # grid keys, upper-case spellings of them (COMMAND, GRID) and misspellings (comand); other names are the
    # user's helpers (lists, imports) and are ignored
    data: dict[str, Any] = {}
    for name, value in module.items():
        key = name.lower() if name.isupper() else name
        if name.startswith("_") or isinstance(value, type(runpy)) or (callable(value) and key != "grid"):
            continue
        if key in FILE_KEYS or closest(key, FILE_KEYS):
            data.setdefault(key, value)
    lines = _python_lines(path)
    grid = data.pop("grid", None)
    if callable(grid):
        try:
            produced = list(grid())
        except Exception as err:  # noqa: BLE001
            raise UserError(f"{path}: grid() failed: {type(err).__name__}: {err}") from None
        bad = [item for item in produced if not isinstance(item, dict)]
        if bad:
            raise UserError(f"{path}: grid() must give mappings of key → value, got {bad[0]!r}")
        data["grid"] = [{"runs": produced}] if produced else []
    elif grid is not None:
        data["grid"] = grid
    return data, lines


def _python_lines(path: Path) -> dict[tuple, int]:
    """Lines of top-level assignments and of string constants (dict keys) in a Python grid file."""
    lines: dict[tuple, int] = {}
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError:
        return lines
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        targets += [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                lines.setdefault((target.id.lower() if target.id.isupper() else target.id,), node.lineno)
        if isinstance(node, ast.FunctionDef):
            lines.setdefault((node.name,), node.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            lines.setdefault(("key", node.value), node.lineno)
    return lines


def key_line(grid: Grid, key: str, entry: GridEntry | None = None) -> int | None:
    """The line naming override ``key`` (YAML: where it is set; Python: the first string constant)."""
    return grid.key_lines.get(key) or (entry.line if entry else None)
