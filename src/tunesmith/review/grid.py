"""The sample grid of a review page: rows (prompts or clips) × columns (checkpoints), each cell the
relative links of a wav and its spectrogram plus a metric line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import quote

from tunesmith.review.checkpoints import CheckpointRef
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


def _rel(samples_dir: Path, path: Path) -> str:
    return "/".join(quote(part) for part in path.relative_to(samples_dir).parts)


def cell_for(samples_dir: Path, wav: Path, note: str = "") -> Cell:
    if not wav.is_file():
        return Cell(note="not generated yet")
    png = wav.with_name(wav.stem + MEL_SUFFIX)
    return Cell(_rel(samples_dir, wav), _rel(samples_dir, png) if png.is_file() else None, note)


def step_note(ref: CheckpointRef) -> str:
    return f"step {ref.step}" if ref.step is not None else ""
