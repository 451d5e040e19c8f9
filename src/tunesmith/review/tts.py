"""tts runs (HiggsAudio v2): the same texts, speakers (voice references) and seeds at every checkpoint.

The review's fixed lines live in ``RUN/samples/review/prompts.jsonl`` (``{"text", "seed", "speaker",
"reference", "reference_text"}``): from ``--prompts`` when given, else first made from the run's
``generate.texts``, else from the dataset's transcripts (valid, then train), one speaker after another; when
the run trained with ``dataset.reference=same_speaker`` each line also gets another clip of its speaker as
the voice reference. Every selected checkpoint speaks them into ``RUN/samples/review/<checkpoint>/<id>.wav``
(with a spectrogram); the page shows a text column, a speaker column and one column per distinct checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.review.audio_samples import generate_review_audio, review_settings
from tunesmith.review.checkpoints import REVIEW_DIR, CheckpointRef, ReviewStats
from tunesmith.review.grid import Cell, Grid, column_label, distinct_checkpoints, group_cell, step_note
from tunesmith.review.run_config import config_section, resolve_relative

log = logging.getLogger("tunesmith.review")

PROMPTS_FILE = "prompts.jsonl"
DEFAULT_NUM_TEXTS = 4
EMPTY_SUFFIX = ".empty"  # marks an item the checkpoint ended before any audio frame


def _dataset_utterances(data: Path) -> list[dict[str, Any]]:
    """``{text, speaker, path}`` of the dataset's segments with a transcript, valid split first."""
    from tunesmith.data.manifest import manifest_path, read_info, read_manifest, resolve_path

    found = []
    for split in ("valid", "train"):
        if not manifest_path(data, split).is_file():
            continue
        try:
            entries = read_manifest(data, split)
        except UserError as err:
            log.warning("cannot read the %s split of %s: %s", split, data, err)
            continue
        for entry in entries:
            try:
                info = read_info(data, entry)
            except UserError:
                continue
            text = str(info.get("transcript") or "").strip()
            speaker = str(info.get("speaker") or (info.get("extra") or {}).get("speaker") or "").strip()
            if text:
                found.append({"text": text, "speaker": speaker, "path": str(resolve_path(data, entry).resolve())})
    return found


def default_speech_lines(config: dict, run_dir: Path, count: int) -> list[dict]:
    """Lines for a first review: ``generate.texts``, else distinct dataset transcripts taking speakers in turn
    (with a same-speaker voice reference when the run trained with them), else one fixed sentence."""
    texts = config_section(config, "generate").get("texts") or []
    if texts:
        return [{"text": str(t), "seed": i} for i, t in enumerate(texts[:count])]
    data = resolve_relative(str(config.get("data") or ""), run_dir) if config.get("data") else None
    utterances = _dataset_utterances(data) if data is not None and data.is_dir() else []
    with_reference = config_section(config, "dataset").get("reference") == "same_speaker"
    by_speaker: dict[str, list[dict]] = {}
    for u in utterances:
        by_speaker.setdefault(u["speaker"], []).append(u)
    lines: list[dict] = []
    seen: set[str] = set()
    for rank in range(max((len(v) for v in by_speaker.values()), default=0)):
        for speaker, own in by_speaker.items():
            if len(lines) >= count or rank >= len(own) or own[rank]["text"] in seen:
                continue
            u = own[rank]
            line: dict[str, Any] = {"text": u["text"], "seed": len(lines)}
            if speaker:
                line["speaker"] = speaker
            other = next((o for o in own if o["path"] != u["path"]), None) if speaker else None
            if with_reference and other is not None:
                line.update(reference=other["path"], reference_text=other["text"])
            seen.add(u["text"])
            lines.append(line)
    if not lines:
        log.warning("no texts in the run config or its dataset; reviewing a fixed sentence")
        return [{"text": "The quick brown fox jumps over the lazy dog.", "seed": 0}]
    return lines


def review_speech_prompts(
    run_dir: Path, config: dict, prompts_file: Path | None, defaults: dict[str, Any], count: int
) -> tuple[list[Any], list[str]]:
    """The fixed review jobs and the problems of skipped lines (stored in ``RUN/samples/review/prompts.jsonl``)."""
    from tunesmith.fileio import atomic_write_text
    from tunesmith.inference.higgs import check_jobs, with_references
    from tunesmith.inference.prompts import read_prompts

    stored = run_dir / "samples" / REVIEW_DIR / PROMPTS_FILE
    given_problems: list[str] = []
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise UserError(f"--prompts {prompts_file}: no such file (JSON lines or one text per line)")
        jobs, problems = read_prompts([], prompts_file, defaults)
        jobs, more = check_jobs(with_references(jobs, None, None))  # references made absolute
        if not jobs:
            raise UserError(f"{prompts_file}: no usable line" + "".join(f"\n  {p}" for p in problems + more))
        lines = [{**job.fields, **job.item.conditions} for job in jobs]
        given_problems = problems + more
    elif not stored.is_file():
        lines = default_speech_lines(config, run_dir, count)
    if prompts_file is not None or not stored.is_file():
        stored.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines)
        atomic_write_text(stored, text)
    jobs, problems = read_prompts([], stored, defaults)
    jobs, more = check_jobs(with_references(jobs, None, None))
    return jobs, given_problems + problems + more


def speech_review_defaults(run_dir: Path, duration: float | None) -> dict[str, Any]:
    """Item settings: the run's (its source's generation_config.json, then its generate section), ``duration``
    (the longest audio, s) overriding when given. Logged once."""
    from tunesmith.inference.higgs import FAMILY_DEFAULTS, model_speech_defaults

    try:
        settings, _, origin = model_speech_defaults(run_dir, "last")
    except UserError as err:
        log.warning("%s: %s; using the family's defaults", run_dir, err)
        settings, origin = dict(FAMILY_DEFAULTS), "the family's defaults"
    return review_settings(settings, origin, duration)


def generate_speech_samples(
    run_dir: Path, refs: list[CheckpointRef], jobs: list[Any], device: str, stats: ReviewStats
) -> None:
    """Every job's wav (and spectrogram) for every checkpoint in ``refs``, skipping what exists; an item whose
    checkpoint ended before any audio frame leaves ``<id>.empty``."""
    from tunesmith.inference.higgs import HiggsGenerator

    def load(folder: Path) -> HiggsGenerator:
        return HiggsGenerator.from_path(folder, device=device, precision="fp32")

    generate_review_audio(run_dir, refs, jobs, stats, load, "%s: speaking %d texts", empty_suffix=EMPTY_SUFFIX)


def _speaker_cell(conditions: dict) -> str:
    speaker = str(conditions.get("speaker") or "")
    reference = conditions.get("reference")
    if reference:
        voice = f"reference {Path(str(reference)).name}: “{conditions.get('reference_text', '')}”"
        return f"{speaker} · {voice}" if speaker else voice
    return speaker or "(no reference: the model's own voice)"


def speech_grid(run_dir: Path, refs: list[CheckpointRef], jobs: list[Any]) -> Grid:
    """Texts (with a speaker column) × distinct checkpoints."""
    samples = run_dir / "samples"
    base = samples / REVIEW_DIR
    groups = distinct_checkpoints(refs)
    titles, details, speakers, cells = [], [], [], []
    for job in jobs:
        item = job.item
        titles.append(item.prompt)
        details.append(
            f"seed {item.seed} · ≤ {item.duration:g} s · "
            + (f"temperature {item.temperature:g}" if item.temperature else "greedy")
            + (f" · top-k {item.top_k}" if item.top_k else "")
            + (f" · top-p {item.top_p:g}" if item.top_p else "")
        )
        speakers.append(_speaker_cell(item.conditions))
        row = []
        for group in groups:
            folders = [base / r.name for r in group]
            empty = any((f / f"{job.id}{EMPTY_SUFFIX}").is_file() for f in folders)
            row.append(Cell(note="ended before any audio") if empty else group_cell(samples, folders, f"{job.id}.wav"))
        cells.append(row)
    return Grid(
        titles,
        details,
        [column_label(g) for g in groups],
        [step_note(g[0]) for g in groups],
        cells,
        row_columns=[("speaker", speakers)],
    )


def review_tts_run(
    run_dir: Path,
    config: dict,
    refs: list[CheckpointRef],
    *,
    prompts: Path | None,
    index_only: bool,
    duration: float | None,
    num_prompts: int | None,
    device: str,
    stats: ReviewStats,
) -> tuple[Grid, list[str]]:
    """The sample grid of a tts run (making the missing samples unless ``index_only``) and skipped-line problems.
    ``duration`` and ``num_prompts`` are checked by :func:`tunesmith.review.runner.review_run`, the caller."""
    defaults = speech_review_defaults(run_dir, duration)
    jobs, problems = review_speech_prompts(run_dir, config, prompts, defaults, num_prompts or DEFAULT_NUM_TEXTS)
    for problem in problems:
        log.warning("skipped %s", problem)
    if not index_only:
        generate_speech_samples(run_dir, refs, jobs, device, stats)
    return speech_grid(run_dir, refs, jobs), problems
