"""One review of a run folder: check its task and the options, select checkpoints, make the missing
samples (LM generation or codec reconstruction) and write ``RUN/samples/index.html``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.review.charts import history_charts, read_history
from tunesmith.review.checkpoints import ReviewStats, list_checkpoints, select_checkpoints
from tunesmith.review.codec_samples import codec_grid, reconstruct_codec_samples
from tunesmith.review.lm_samples import (
    DEFAULT_NUM_PROMPTS,
    generate_lm_samples,
    generation_defaults,
    lm_grid,
    review_prompts,
)
from tunesmith.review.page import render_page
from tunesmith.review.run_config import run_task

log = logging.getLogger("tunesmith.review")

INDEX = "index.html"


@dataclasses.dataclass
class ReviewResult:
    index: Path
    task: str
    checkpoints: list[str]
    stats: ReviewStats
    problems: list[str]  # skipped prompt lines


def review_run(
    run_dir: str | Path,
    *,
    epochs: str = "all",
    prompts: Path | None = None,
    index_only: bool = False,
    duration: float | None = None,
    num_prompts: int | None = None,
    data: Path | None = None,
    device: str = "cpu",
) -> ReviewResult:
    """Make the missing samples of the selected checkpoints (unless ``index_only``) and write ``samples/index.html``."""
    from tunesmith.fileio import atomic_write_text

    run_dir = Path(run_dir)
    task, config = run_task(run_dir)
    if task not in ("lm", "codec"):
        raise UserError(f"{run_dir}: review handles lm and codec runs; this is a {task!r} run")
    if num_prompts is not None and num_prompts < 1:
        raise UserError(f"--num-prompts={num_prompts}: must be at least 1")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise UserError(f"--duration={duration}: must be a positive number of seconds")
    refs = select_checkpoints(list_checkpoints(run_dir), epochs)
    stats = ReviewStats()
    problems: list[str] = []
    if task == "lm":
        defaults = generation_defaults(config, duration)
        jobs, problems = review_prompts(run_dir, config, prompts, defaults, num_prompts or DEFAULT_NUM_PROMPTS)
        for problem in problems:
            log.warning("skipped %s", problem)
        if not index_only:
            generate_lm_samples(run_dir, refs, jobs, device, stats)
        grid = lm_grid(run_dir, refs, jobs)
    else:
        if prompts is not None:
            raise UserError("--prompts is for LM runs; a codec run is reviewed on fixed dataset clips (see --data)")
        if not index_only:
            reconstruct_codec_samples(run_dir, refs, config, data, num_prompts, device, stats)
        grid = codec_grid(run_dir, refs)
    charts = history_charts(read_history(run_dir / "history.jsonl"))
    index = run_dir / "samples" / INDEX
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, render_page(run_dir, task, grid, charts))
    return ReviewResult(index, task, [r.name for r in refs], stats, problems)
