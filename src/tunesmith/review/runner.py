"""One review of a run folder: check its task and the options, select checkpoints, make the missing
samples (LM generation or codec reconstruction) and write ``RUN/samples/index.html``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.review.baseline import lm_unigram_baseline
from tunesmith.review.charts import history_figures, read_history
from tunesmith.review.checkpoints import ReviewStats, list_checkpoints, select_checkpoints
from tunesmith.review.codec_samples import clip_summary, codec_grid, reconstruct_codec_samples
from tunesmith.review.lm_samples import (
    DEFAULT_NUM_PROMPTS,
    generate_lm_samples,
    generation_defaults,
    lm_grid,
    review_prompts,
)
from tunesmith.review.notes import (
    add_clip_notes,
    add_unigram_baseline,
    codec_clip_notes,
    hidden_checkpoints_note,
    pruned_checkpoints_note,
    unigram_note,
)
from tunesmith.review.page import PageNotes, render_page
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
    if task == "midi":  # piano rolls and free-running metrics (review/midi.py)
        from tunesmith.review.midi import review_midi_run

        return review_midi_run(
            run_dir, config, epochs=epochs, index_only=index_only, num_pieces=num_prompts, data=data, device=device
        )
    if task not in ("lm", "codec", "tts"):
        raise UserError(f"{run_dir}: review handles lm, codec and midi runs, and tts runs; this is a {task!r} run")
    if num_prompts is not None and num_prompts < 1:
        raise UserError(f"--num-prompts={num_prompts}: must be at least 1")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise UserError(f"--duration={duration}: must be a positive number of seconds")
    all_refs = list_checkpoints(run_dir)
    refs = select_checkpoints(all_refs, epochs)
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
    elif task == "tts":  # speech: texts × speakers × checkpoints (review/tts.py)
        from tunesmith.review.tts import review_tts_run

        grid, problems = review_tts_run(
            run_dir, config, refs, prompts=prompts, index_only=index_only, duration=duration,
            num_prompts=num_prompts, device=device, stats=stats,
        )  # fmt: skip
    else:
        if prompts is not None:
            raise UserError("--prompts is for LM runs; a codec run is reviewed on fixed dataset clips (see --data)")
        if not index_only:
            reconstruct_codec_samples(run_dir, refs, config, data, num_prompts, device, stats)
        grid = codec_grid(run_dir, refs)
    history = read_history(run_dir / "history.jsonl")
    figures = history_figures(history)
    notes = PageNotes(checkpoints=[hidden_checkpoints_note(all_refs, refs, run_dir)])
    notes.checkpoints.append(pruned_checkpoints_note(all_refs, config, _trained_epochs(run_dir, history)))
    if task == "lm":
        codebooks = len({key for record in history for key in record if key.startswith("ce_q")}) or None
        baseline = lm_unigram_baseline(run_dir, config, codebooks)
        if baseline is not None:
            add_unigram_baseline(figures, baseline)
            notes.curves.append(unigram_note(baseline))
    elif task == "codec":
        curves, short, samples = codec_clip_notes(config, clip_summary(run_dir, refs), num_prompts)
        add_clip_notes(figures, short)
        notes.curves.append(curves)
        notes.numbers_measured_on = {"evaluate": short, "valid": "the valid split: mean over fixed crops"}
        notes.samples.append(samples)
    index = run_dir / "samples" / INDEX
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, render_page(run_dir, task, grid, figures, notes))
    return ReviewResult(index, task, [r.name for r in refs], stats, problems)


def _trained_epochs(run_dir: Path, history: list[dict]) -> int:
    """Epochs the run finished: status.json's epoch, else the last epoch in its history."""
    from tunesmith.artifacts.runs import STATUS_FILE, read_json

    status = read_json(run_dir / STATUS_FILE) or {}
    if isinstance(status.get("epoch"), int):
        return int(status["epoch"])
    return max((int(r["epoch"]) for r in history if isinstance(r.get("epoch"), int)), default=0)
