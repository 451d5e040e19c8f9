"""The sample grid of a review page: rows (prompts or clips) × columns (distinct checkpoints), each cell the
relative links of a wav and its spectrogram plus a metric line.

One column per distinct set of weights: ``best`` and ``last`` are copies of a numbered checkpoint (or of each
other) most of the time, so they join its column (``epoch 12 (best, last)``) instead of repeating it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import quote

from tunesmith.review.checkpoints import _NUMBERED, CheckpointRef
from tunesmith.review.images import MEL_SUFFIX


@dataclasses.dataclass
class Cell:
    """One sample on the page: paths relative to ``RUN/samples`` (None = not made), and a metric line."""

    audio: str | None = None
    image: str | None = None
    note: str = ""


@dataclasses.dataclass
class Grid:
    """Rows (prompts or clips) × columns (checkpoints, after an optional ``original`` column)."""

    row_titles: list[str]
    row_details: list[str]
    columns: list[str]
    column_details: list[str]
    cells: list[list[Cell]]  # [row][column]
    # text columns shown between the row title and the sample columns: (header, one value per row)
    row_columns: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)


def _rel(samples_dir: Path, path: Path) -> str:
    return "/".join(quote(part) for part in path.relative_to(samples_dir).parts)


def cell_for(samples_dir: Path, wav: Path, note: str = "") -> Cell:
    if not wav.is_file():
        return Cell(note="not generated yet")
    png = wav.with_name(wav.stem + MEL_SUFFIX)
    return Cell(_rel(samples_dir, wav), _rel(samples_dir, png) if png.is_file() else None, note)


def step_note(ref: CheckpointRef) -> str:
    return f"step {ref.step}" if ref.step is not None else ""


def distinct_checkpoints(refs: list[CheckpointRef]) -> list[list[CheckpointRef]]:
    """``refs`` grouped by identical weights (numbered checkpoints first within a group), groups in training
    order (epoch, then step)."""
    groups: dict[str, list[CheckpointRef]] = {}
    for ref in refs:
        groups.setdefault(ref.weights_sha256, []).append(ref)
    ordered = [sorted(g, key=lambda r: (not _NUMBERED.match(r.name), r.epoch or 0, r.name)) for g in groups.values()]
    return sorted(ordered, key=lambda g: (g[0].epoch is None, g[0].epoch or 0, g[0].step or 0))


def column_label(group: list[CheckpointRef]) -> str:
    """``epoch 12``, ``epoch 12 (best, last)`` or ``epoch 7 (best)``: the epoch once, the other names after it."""
    numbered = [r for r in group if _NUMBERED.match(r.name)]
    named = [r.name for r in group if not _NUMBERED.match(r.name)]
    if numbered:
        base = ", ".join(f"epoch {r.epoch}" for r in numbered)
    elif group[0].epoch is not None:
        base = f"epoch {group[0].epoch}"
    else:
        return ", ".join(named)
    return f"{base} ({', '.join(named)})" if named else base


def group_cell(samples_dir: Path, folders: list[Path], name: str, note: str = "") -> Cell:
    """The cell of file ``name`` found in the first of ``folders`` (one per checkpoint of a column) that has it."""
    for folder in folders:
        if (folder / name).is_file():
            return cell_for(samples_dir, folder / name, note)
    return Cell(note="not generated yet")
