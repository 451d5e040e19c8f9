"""What the reviews of runs that generate audio (LM and tts runs) share: the item settings with ``--duration``
applied, and the per-checkpoint generation loop (every job's wav and its spectrogram in every selected
checkpoint's folder, skipping what exists and reusing the files of a checkpoint with identical weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.fileio import link_or_copy
from tunesmith.review.checkpoints import REVIEW_DIR, CheckpointRef, ReviewStats, prepare_output, twin_file
from tunesmith.review.images import ensure_mel_png

log = logging.getLogger("tunesmith.review")


def review_settings(settings: dict[str, Any], origin: str, duration: float | None) -> dict[str, Any]:
    """The review's item settings: ``settings`` (from ``origin``) with ``duration`` (s) overriding when given;
    logged once."""
    from tunesmith.inference.defaults import describe

    if duration is not None:
        settings["duration"] = float(duration)
    log.info("review settings: %s (from %s%s)", describe(settings), origin, "; --duration" if duration else "")
    return settings


def generate_review_audio(
    run_dir: Path,
    refs: list[CheckpointRef],
    jobs: list[Any],
    stats: ReviewStats,
    load: Callable[[Path], Any],
    log_line: str,
    empty_suffix: str | None = None,
) -> None:
    """Every job's ``<id>.wav`` (and spectrogram) for every checkpoint in ``refs``, skipping what exists.

    ``load(checkpoint folder)`` gives the generator (``max_batch``, ``generate(items)`` → results with ``wav``
    [C, T] and ``sample_rate``); a UserError skips that checkpoint (``stats.skipped_checkpoints``).
    ``log_line`` is logged with the checkpoint's label and the number of jobs to make (``"%s: ... %d ..."``).
    With ``empty_suffix``, an item that came back without samples leaves ``<id><empty_suffix>`` instead of a
    wav, and that marker counts as made.
    """
    from tunesmith.audio.io import save_audio
    from tunesmith.fileio import atomic_write_text

    base = run_dir / "samples" / REVIEW_DIR
    for ref in refs:
        folder = base / ref.name
        prepare_output(folder, ref)
        todo = []
        for job in jobs:
            target = folder / f"{job.id}.wav"
            if target.is_file() or (empty_suffix is not None and (folder / f"{job.id}{empty_suffix}").is_file()):
                stats.existing += 1
            elif (twin := twin_file(base, ref, refs, target.name)) is not None:
                link_or_copy(twin, target)
                stats.reused += 1
            else:
                todo.append(job)
        if todo:
            try:
                generator = load(ref.folder)
            except UserError as err:
                log.warning("skipping checkpoint %s: %s", ref.name, err)
                stats.skipped_checkpoints.append(ref.name)
                continue
            log.info(log_line, ref.label, len(todo))
            for start in range(0, len(todo), generator.max_batch):
                chunk = todo[start : start + generator.max_batch]
                for job, result in zip(chunk, generator.generate([j.item for j in chunk]), strict=True):
                    if empty_suffix is None or result.wav.shape[-1]:
                        save_audio(folder / f"{job.id}.wav", result.wav, result.sample_rate)
                    else:
                        atomic_write_text(folder / f"{job.id}{empty_suffix}", "ended before any audio frame\n")
                    stats.generated += 1
            del generator
        for job in jobs:
            wav = folder / f"{job.id}.wav"
            if wav.is_file():
                ensure_mel_png(wav)
