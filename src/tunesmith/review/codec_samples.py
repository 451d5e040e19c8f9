"""Codec runs: the fixed valid clips of the run's dataset, reconstructed by every checkpoint (originals
beside reconstructions, ``report.json`` with SI-SNR and mel distance), and the clips × checkpoints grid.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.fileio import link_or_copy
from tunesmith.review.checkpoints import (
    REVIEW_DIR,
    CheckpointRef,
    ReviewStats,
    prepare_output,
    twin_file,
)
from tunesmith.review.grid import Cell, Grid, cell_for, column_label, distinct_checkpoints, step_note
from tunesmith.review.images import ensure_mel_png
from tunesmith.review.run_config import config_section, resolve_relative

log = logging.getLogger("tunesmith.review")


def codec_clips(config: dict, run_dir: Path, data: Path | None, num_clips: int | None) -> list[Any]:
    """The fixed valid clips a codec run is reviewed on (``check`` section of its config)."""
    from tunesmith.eval.codec import select_clips

    model = config_section(config, "model")
    check = config_section(config, "check")
    if data is None:
        recorded = str(config.get("data") or "")
        data = resolve_relative(recorded, run_dir) if recorded else None
        if data is None:
            raise UserError(
                f"{run_dir}: cannot find the dataset this codec was trained on (config says data={recorded!r}); "
                "pass --data DIR"
            )
    count = num_clips or int(check.get("num_samples") or 4)
    return select_clips(
        data,
        count,
        int(model.get("sample_rate") or 32000),
        int(model.get("channels") or 1),
        "valid",
        float(check.get("max_seconds") or 10.0),
    )


def reconstruct_codec_samples(
    run_dir: Path,
    refs: list[CheckpointRef],
    config: dict,
    data: Path | None,
    num_clips: int | None,
    device: str,
    stats: ReviewStats,
) -> None:
    """Original/reconstruction pairs and ``report.json`` (with SI-SNR) for every checkpoint, skipping what exists."""
    from tunesmith.eval.codec import check_codec
    from tunesmith.models.codec import load_codec

    base = run_dir / "samples" / REVIEW_DIR
    clips = None
    for ref in refs:
        folder = base / ref.name
        prepare_output(folder, ref)
        if (folder / "report.json").is_file():
            stats.existing += len(_codec_report(folder))
        elif (twin := twin_file(base, ref, refs, "report.json")) is not None:
            for path in sorted(twin.parent.iterdir()):  # the report last: it marks the folder complete
                if path.suffix == ".wav":
                    link_or_copy(path, folder / path.name)
            link_or_copy(twin, folder / "report.json")
            stats.reused += len(_codec_report(folder))
        else:
            if clips is None:
                clips = codec_clips(config, run_dir, data, num_clips)
            try:
                codec = load_codec(ref.folder, device=device)
            except UserError as err:
                log.warning("skipping checkpoint %s: %s", ref.name, err)
                stats.skipped_checkpoints.append(ref.name)
                continue
            log.info("%s: reconstructing %d clips", ref.label, len(clips))
            check_codec(codec, clips, folder, device=device)
            stats.generated += len(clips)
        for wav in sorted(folder.glob("*.wav")):
            ensure_mel_png(wav)


def _codec_report(folder: Path) -> list[dict]:
    try:
        clips = json.loads((folder / "report.json").read_text())["clips"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [c for c in clips if isinstance(c, dict) and c.get("name")]


def codec_grid(run_dir: Path, refs: list[CheckpointRef]) -> Grid:
    """Clips × (original, then distinct checkpoints: ``best``/``last`` join the numbered one with their weights)."""
    samples = run_dir / "samples"
    base = samples / REVIEW_DIR
    reports = {ref.name: {c["name"]: c for c in _codec_report(base / ref.name)} for ref in refs}
    groups = distinct_checkpoints(refs)
    names: list[str] = []
    for ref in refs:
        names.extend(n for n in reports[ref.name] if n not in names)
    titles, details, cells = [], [], []
    for name in names:
        first = next(ref for ref in refs if name in reports[ref.name])
        clip = reports[first.name][name]
        titles.append(name)
        details.append(f"{float(clip.get('seconds', 0)):.2f} s")
        row = [cell_for(samples, base / first.name / str(clip.get("original") or ""), "original")]
        for group in groups:
            ref = next((r for r in group if name in reports[r.name]), None)
            if ref is None:
                row.append(Cell(note="not reconstructed yet"))
                continue
            c = reports[ref.name][name]
            note = f"SI-SNR {float(c['sisnr']):.2f} dB · mel {float(c['mel']):.3f}"
            row.append(cell_for(samples, base / ref.name / str(c.get("reconstructed") or ""), note))
        cells.append(row)
    columns = ["original"] + [column_label(g) for g in groups]
    return Grid(titles, details, columns, ["dataset clip"] + [step_note(g[0]) for g in groups], cells)


def clip_summary(run_dir: Path, refs: list[CheckpointRef]) -> tuple[int, float, float] | None:
    """(clips, seconds in all, longest clip in seconds) of the clips the review reconstructed, from the
    first checkpoint's ``report.json``; None before any was made."""
    base = run_dir / "samples" / REVIEW_DIR
    for ref in refs:
        clips = _codec_report(base / ref.name)
        if clips:
            seconds = [float(c.get("seconds") or 0.0) for c in clips]
            return len(clips), sum(seconds), max(seconds)
    return None
