"""LM runs: the review's fixed prompt items (stored in ``RUN/samples/review/prompts.jsonl``, first made
from the run's ``generate.prompts`` or its dataset texts), their generation defaults, one fixed-seed
sample per prompt and checkpoint, and the prompts × checkpoints grid.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.review.audio_samples import generate_review_audio, review_settings
from tunesmith.review.checkpoints import REVIEW_DIR, CheckpointRef, ReviewStats
from tunesmith.review.grid import Grid, column_label, distinct_checkpoints, group_cell, step_note
from tunesmith.review.run_config import config_section, resolve_relative

log = logging.getLogger("tunesmith.review")

PROMPTS_FILE = "prompts.jsonl"
DEFAULT_NUM_PROMPTS = 4


def default_prompt_lines(config: dict, run_dir: Path, count: int) -> list[dict]:
    """Prompt lines for a first review: ``generate.prompts`` of the run config, else distinct texts (with the
    model's attributes) from the dataset's valid then train split, else unconditional items with seeds 0..n-1."""
    cond = config_section(config, "model", "conditioner")
    text_field = str(cond.get("text_field") or "description")
    attributes = [str(a) for a in cond.get("attributes") or []]
    if cond.get("text", "builtin") == "none" and not attributes:
        return [{"prompt": "", "seed": i} for i in range(count)]
    configured = config_section(config, "generate").get("prompts") or []
    if configured:
        return [{"prompt": str(p)} for p in configured[:count]]
    lines: list[dict] = []
    data = resolve_relative(str(config.get("data") or ""), run_dir) if config.get("data") else None
    if data is not None:
        from tunesmith.data.manifest import manifest_path, read_info, read_manifest

        for split in ("valid", "train"):
            if len(lines) >= count or not manifest_path(data, split).is_file():
                continue
            try:
                entries = read_manifest(data, split)
            except UserError as err:
                log.warning("cannot read the %s prompts of %s: %s", split, data, err)
                continue
            for entry in entries[: 50 * count]:
                try:
                    info = read_info(data, entry)
                except UserError:
                    continue
                text = str(info.get(text_field) or "")
                line = {"prompt": text, **{a: info[a] for a in attributes if info.get(a) not in (None, "", [])}}
                if text and line not in lines:
                    lines.append(line)
                if len(lines) >= count:
                    break
    if not lines:
        log.warning("no prompts found in the run config or its dataset; reviewing unconditional samples")
        return [{"prompt": "", "seed": i} for i in range(count)]
    return lines[:count]


def review_prompts(
    run_dir: Path, config: dict, prompts_file: Path | None, defaults: dict[str, Any], count: int
) -> tuple[list[Any], list[str]]:
    """The review's fixed prompt items (generate_cli Jobs) and the problems of skipped lines.

    They live in ``RUN/samples/review/prompts.jsonl``: written from ``prompts_file`` when given, else from
    the run's defaults the first time; later reviews reuse it, so every checkpoint hears the same prompts.
    """
    from tunesmith.fileio import atomic_write_text
    from tunesmith.inference.prompts import read_prompts

    stored = run_dir / "samples" / REVIEW_DIR / PROMPTS_FILE
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise UserError(f"--prompts {prompts_file}: no such file (JSON lines or one prompt per line)")
        jobs, problems = read_prompts([], prompts_file, defaults)
        if not jobs:
            raise UserError(f"{prompts_file}: no usable prompt line" + ("".join(f"\n  {p}" for p in problems)))
        lines = [job.fields for job in jobs]
    elif stored.is_file():
        return read_prompts([], stored, defaults)
    else:
        lines, problems = default_prompt_lines(config, run_dir, count), []
    stored.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stored, "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines))
    jobs, more = read_prompts([], stored, defaults)
    return jobs, problems + more


def generation_defaults(config: dict, duration: float | None) -> dict[str, Any]:
    """Item settings: the one source of defaults (the run's ``generate`` section, else the family's;
    :mod:`tunesmith.inference.defaults`), with ``duration`` overriding when given. Logged once."""
    from tunesmith.inference.defaults import generation_defaults as shared_defaults

    settings, origin = shared_defaults(config)
    return review_settings(settings, origin, duration)


def generate_lm_samples(
    run_dir: Path, refs: list[CheckpointRef], jobs: list[Any], device: str, stats: ReviewStats
) -> None:
    """Every job's wav (and spectrogram) for every checkpoint in ``refs``, skipping what exists."""
    from tunesmith.inference.lm import Generator

    def load(folder: Path) -> Generator:
        return Generator.from_path(folder, device=device)

    generate_review_audio(run_dir, refs, jobs, stats, load, "%s: generating %d samples")


def lm_grid(run_dir: Path, refs: list[CheckpointRef], jobs: list[Any]) -> Grid:
    """Prompts × distinct checkpoints (``best``/``last`` join the numbered checkpoint with their weights)."""
    samples = run_dir / "samples"
    base = samples / REVIEW_DIR
    groups = distinct_checkpoints(refs)
    titles, details, cells = [], [], []
    for job in jobs:
        item = job.item
        extra = ", ".join(f"{k}={v}" for k, v in item.conditions.items())
        titles.append(item.prompt or "(unconditional)")
        details.append(
            f"seed {item.seed} · {item.duration:g} s · cfg {item.cfg:g} · top-k {item.top_k}"
            + (f" · top-p {item.top_p:g}" if item.top_p else "")
            + (f" · {extra}" if extra else "")
        )
        cells.append([group_cell(samples, [base / r.name for r in g], f"{job.id}.wav") for g in groups])
    return Grid(titles, details, [column_label(g) for g in groups], [step_note(g[0]) for g in groups], cells)
