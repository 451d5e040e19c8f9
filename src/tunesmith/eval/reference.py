"""The reference side of the generation metrics: segments chosen from a prepared dataset's split with the
texts their sidecars describe them with, and their audio as :class:`tunesmith.eval.embed.AudioClip`.

The choice is even over the split and stable (the same segments for the same count), and comes with an
identity (manifest digest, chosen paths) that keys the reference-statistics cache.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.eval.embed import AudioClip

log = logging.getLogger(__name__)

ATTRIBUTE_FIELDS = ("genre", "bpm", "key", "instrument")


@dataclasses.dataclass
class ReferenceItem:
    """A chosen reference segment: its audio path, the texts it was described with, its manifest index."""

    index: int
    path: Path
    description: str
    transcript: str
    conditions: dict[str, Any]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # the whole sidecar


def choose_reference(dataset: Path, split: str, num_samples: int) -> tuple[list[ReferenceItem], dict[str, Any]]:
    """``num_samples`` segments spread evenly over ``split`` with their sidecar texts, and the identity of
    that choice (manifest digest and chosen paths) for the statistics cache."""
    from tunesmith.data.manifest import manifest_path, read_info, read_manifest, resolve_path, spread_indices
    from tunesmith.data.prepare.fingerprint import file_digest

    manifest = manifest_path(dataset, split)
    if not manifest.is_file():
        raise UserError(f"{dataset}: no {split} split ({manifest} is missing); pass --split train or another split")
    entries = read_manifest(dataset, split)
    if not entries:
        raise UserError(f"{manifest}: no segments to evaluate against")
    picks = spread_indices(len(entries), num_samples)
    items = []
    for index in picks:
        entry = entries[index]
        try:
            info = read_info(dataset, entry)
        except UserError as err:
            log.warning("%s: no sidecar texts (%s)", entry.path, err)
            info = {}
        description = info.get("description") or ""
        conditions = {k: info[k] for k in ATTRIBUTE_FIELDS if info.get(k) not in (None, "", [])}
        transcript = str(info.get("transcript") or "")
        items.append(ReferenceItem(index, resolve_path(dataset, entry), str(description), transcript, conditions, info))
    identity = {
        "dataset": str(Path(dataset).resolve()),
        "split": split,
        "manifest": file_digest(manifest, rows=True),
        "segments": [str(e.path) for e in (entries[i] for i in picks)],
    }
    return items, identity


def load_clip(path: Path, name: str, max_seconds: float | None, texts: ReferenceItem | None = None) -> AudioClip:
    """An audio file as a clip at its own rate, cut to ``max_seconds``, with the texts of ``texts``."""
    from tunesmith.audio.io import load_audio

    wav, rate = load_audio(path)
    if max_seconds is not None:
        wav = wav[:, : int(round(max_seconds * rate))]
    desc, transcript = (texts.description, texts.transcript) if texts else ("", "")
    return AudioClip(name, wav, int(rate), desc, transcript)
