"""Prompt items from the command line and prompts files (one JSON object or plain text per line).

Each item gets a stable id (``<line>-<slug>-<hash>``) covering its line and its settings, so an
edited prompts file regenerates the edited lines only; bad lines are reported as ``file:line``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.inference.request import GenerationItem


@dataclass
class Job:
    """A parsed item with its stable id (``<line>-<slug>-<hash>``)."""

    id: str
    line: int  # 1-based line in the prompts file, or the --prompt position
    source: str
    item: GenerationItem
    fields: dict = field(default_factory=dict)


def _slug(text: str, limit: int = 32) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "uncond"


def _job_id(index: int, item: GenerationItem) -> str:
    import dataclasses

    payload = json.dumps(dataclasses.asdict(item), sort_keys=True, default=str)
    digest = hashlib.sha1(payload.encode()).hexdigest()[:8]
    return f"{index:05d}-{_slug(item.prompt)}-{digest}"


def read_prompts(
    prompts: list[str], path: Path | None, defaults: dict[str, Any], limits: Any = None
) -> tuple[list[Job], list[str]]:
    """Jobs from --prompt values and a prompts file; problems as ``file:line: message`` (bad lines are skipped)."""
    from tunesmith.inference.request import parse_item

    raw: list[tuple[str, int, Any]] = [("--prompt", i + 1, {"prompt": p}) for i, p in enumerate(prompts)]
    problems: list[tuple[str, int, str]] = []
    if path is not None:
        from tunesmith.errors import UserError

        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: cannot read the prompts file ({err})") from err
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("{"):
                try:
                    raw.append((str(path), number, json.loads(stripped)))
                except json.JSONDecodeError as err:
                    problems.append((str(path), number, f"not valid JSON ({err.msg} at column {err.colno})"))
            else:
                raw.append((str(path), number, {"prompt": stripped}))
    jobs: list[Job] = []
    for index, (source, number, data) in enumerate(raw):
        try:
            fields = dict(data) if isinstance(data, dict) else data
            if isinstance(fields, dict) and "seed" not in fields:
                fields["seed"] = defaults["seed"] + index
            item = parse_item(fields, {k: v for k, v in defaults.items() if k != "seed"}, limits)
        except (ValueError, TypeError) as err:
            problems.append((source, number, str(err)))
            continue
        jobs.append(Job(_job_id(index, item), number, source, item, fields if isinstance(fields, dict) else {}))
    return jobs, [f"{source}:{number}: {message}" for source, number, message in sorted(problems)]


def with_melody(jobs: list[Job], melody: Path) -> list[Job]:
    """Jobs whose items follow ``melody`` (a wav path, made absolute) unless their line names one; ids
    recomputed, so that a changed melody regenerates."""
    path = str(Path(melody).expanduser().resolve())
    out = []
    for index, job in enumerate(jobs):
        conditions = {"melody": path, **job.item.conditions}
        item = GenerationItem(**{**job.item.__dict__, "conditions": conditions})
        prefix = job.id.split("-", 1)[0]
        index = int(prefix) if prefix.isdigit() else index
        out.append(Job(_job_id(index, item), job.line, job.source, item, job.fields))
    return out


def attribute_warnings(jobs: list[Job], known: dict[str, list[str]]) -> list[str]:
    """``file:line`` warnings about attributes the model does not use (ignored) or values it never saw
    (generated as unknown); the items still run, as prompts files often carry extra metadata."""
    from tunesmith.inference.lm import attribute_problems
    from tunesmith.models.lm.conditioners import ATTRIBUTES

    warnings = []
    for job in jobs:
        given = {name: job.item.conditions[name] for name in ATTRIBUTES if name in job.item.conditions}
        for problem in attribute_problems(given, known):
            effect = "ignored" if problem["type"] == "attribute_unused" else "generated as an unknown value"
            warnings.append(f"{job.source}:{job.line}: {problem['field']}: {problem['message']} ({effect})")
    return warnings


def batches(jobs: list[Job], size: int) -> Iterator[list[Job]]:
    """Jobs with the same settings (``batch_key``), ``size`` at a time, in order of first appearance."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.item.batch_key(), []).append(job)
    for group in groups.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]
