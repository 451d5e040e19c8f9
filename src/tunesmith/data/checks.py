"""`tunesmith check data DIR`: is a prepared dataset complete, consistent and useful for conditioning?

Checks that every manifest entry's audio exists and matches its duration and sample rate, that its
sidecar parses, and reports caption coverage, average description length (word tokens) and the
genre distribution. :func:`validate_conditioning` warns when a text-conditioned run would
effectively be unconditional (few or identical descriptions).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Word-level tokens: runs of letters/digits and single punctuation marks."""
    return len(_TOKEN.findall(text))


def validate_conditioning(
    descriptions: list[str], *, min_coverage: float = 0.5, max_single_share: float = 0.9
) -> list[str]:
    """Warnings for a text-conditioned run on these per-segment descriptions ("" = none).

    Warns when fewer than ``min_coverage`` of the segments have a description, when all
    descriptions are identical, or when one description covers more than ``max_single_share``.
    """
    total = len(descriptions)
    if total == 0:
        return ["no segments: nothing to condition on"]
    present = [d.strip() for d in descriptions if d and d.strip()]
    warnings = []
    coverage = len(present) / total
    if not present:
        return ["no segment has a description: a text-conditioned run would be unconditional"]
    if coverage < min_coverage:
        warnings.append(
            f"only {coverage:.0%} of segments have a description: a text-conditioned run would be mostly "
            "unconditional; add captions (sidecar .txt/.json) or train unconditionally"
        )
    counts = Counter(present)
    if len(counts) == 1:
        warnings.append(
            f"all {len(present)} descriptions are identical ({present[0][:60]!r}): the text condition carries "
            "no information, so the run would effectively be unconditional"
        )
    else:
        top, n = counts.most_common(1)[0]
        if n / total > max_single_share:
            warnings.append(
                f"one description ({top[:60]!r}) covers {n / total:.0%} of segments: the text condition carries "
                "little information"
            )
    return warnings


@dataclass
class DataReport:
    """Result of :func:`check_dataset`: errors (broken data), warnings, and statistics."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "warnings": self.warnings, "stats": self.stats}


def check_dataset(dataset_dir: str | Path, *, verify_audio: bool = True, max_errors: int = 50) -> DataReport:
    """Check a prepared dataset. UserError when DIR is not a dataset at all; problems inside it
    are returned as errors (at most ``max_errors`` listed, all counted in stats)."""
    from tunesmith.audio.io import probe_audio
    from tunesmith.data.manifest import SPLITS, manifest_path, read_dataset_json, read_info, read_manifest, resolve_path

    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise UserError(f"{dataset_dir}: no such folder")
    report = DataReport()
    try:
        dataset = read_dataset_json(dataset_dir)
    except UserError as err:
        report.warnings.append(str(err))
        dataset = {}
    expected_rate = dataset.get("sample_rate")
    splits = [s for s in SPLITS if manifest_path(dataset_dir, s).is_file()]
    if not splits:
        raise UserError(f"{dataset_dir}: no egs/train/data.jsonl or egs/valid/data.jsonl; is it a prepared dataset?")
    if "train" not in splits:
        report.errors.append(f"{manifest_path(dataset_dir, 'train')}: missing; there is nothing to train on")
    n_errors = 0

    def error(message: str) -> None:
        nonlocal n_errors
        n_errors += 1
        if n_errors <= max_errors:
            report.errors.append(message)

    all_descriptions: list[str] = []
    for split in splits:
        entries = read_manifest(dataset_dir, split)
        descriptions, tokens, genres = [], [], Counter()
        seconds = 0.0
        for entry in entries:
            seconds += entry.duration
            path = resolve_path(dataset_dir, entry)
            if expected_rate and entry.sample_rate != expected_rate:
                error(f"{entry.path}: manifest sample_rate {entry.sample_rate} != dataset's {expected_rate}")
            if not path.is_file():
                error(f"{entry.path}: missing audio file")
                continue
            if verify_audio:
                try:
                    info = probe_audio(path)
                except UserError as err:
                    error(str(err))
                    continue
                if info.sample_rate != entry.sample_rate:
                    error(f"{path}: file is {info.sample_rate} Hz, manifest says {entry.sample_rate} Hz")
                elif (
                    info.frames is not None
                    and abs(info.frames / info.sample_rate - entry.duration) > 1.5 / (info.sample_rate) + 1e-6
                ):
                    error(
                        f"{path}: file lasts {info.frames / info.sample_rate:.4f} s, manifest says {entry.duration} s"
                    )
            try:
                meta = read_info(dataset_dir, entry)
            except UserError as err:
                error(str(err))
                descriptions.append("")
                continue
            description = str(meta.get("description") or "").strip()
            descriptions.append(description)
            if description:
                tokens.append(count_tokens(description))
            genres[str(meta.get("genre") or "(none)")] += 1
        described = sum(1 for d in descriptions if d)
        report.stats[split] = {
            "segments": len(entries),
            "hours": round(seconds / 3600, 4),
            "description_share": round(described / len(entries), 4) if entries else 0.0,
            "avg_description_tokens": round(sum(tokens) / len(tokens), 2) if tokens else 0.0,
            "genres": dict(genres.most_common(20)),
        }
        if not entries:
            (report.errors if split == "train" else report.warnings).append(f"{split}: the manifest is empty")
        all_descriptions.extend(descriptions)
    report.stats["errors_total"] = n_errors
    if n_errors > max_errors:
        report.errors.append(f"... and {n_errors - max_errors} more errors")
    report.warnings.extend(validate_conditioning(all_descriptions))
    return report
