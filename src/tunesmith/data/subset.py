"""Choosing part of a source: ``--include``/``--exclude`` filters and a deterministic ``--max-tracks`` subset.

Filters (``tunesmith prepare --include X --exclude Y``, each repeatable):

- ``KEY=PATTERN`` (KEY a name such as ``genre``, ``artist``, ``moods``, ``split`` or any column an
  hf-dataset carries) matches a track whose metadata field KEY matches the glob PATTERN, case-insensitively;
  a list field (moods, keywords) matches when one of its items does.
- anything else is a glob on the track's path relative to its SOURCE (``fma_small/000/*``, ``*/rock/*``,
  ``*.flac``); a track without a file (synthetic, audio stored in a dataset) is matched by its name.

A track is kept when, for every KEY used by ``--include`` (paths count as one KEY), it matches one of that
KEY's patterns, and it matches no ``--exclude`` filter.

``--max-tracks N``: the tracks are ranked by ``sha256(seed, track id)`` — a track id is stable (``fma:2``,
``jamendo:track_0000100``, ``folder:<root>/<relative path>``) — and the N lowest are taken: the same N for
the same seed, whatever the order of the files, and adding files changes the choice only where a new file
ranks lower (a new track never reshuffles the others). Tracks a dataset folder already holds (prepared, not
rejected) are kept first, so a re-run after adding files does not swap prepared tracks for new ones. A chosen
track that is rejected while preparing leaves its place empty in that run; the next run gives it to the
next-ranked track.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.sources import Track
from tunesmith.errors import UserError

_META_FILTER = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$")
PATH_KEY = ""


@dataclass
class TrackFilter:
    """Parsed ``--include``/``--exclude`` filters: KEY → patterns (``""`` is the relative path)."""

    include: dict[str, list[str]] = field(default_factory=dict)
    exclude: dict[str, list[str]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude)


def parse_filters(include: Iterable[str] | None, exclude: Iterable[str] | None) -> TrackFilter:
    """``["genre=Rock", "fma_small/000/*"]`` → :class:`TrackFilter`; UserError on an empty filter."""
    out = TrackFilter()
    for flag, items, into in (("--include", include, out.include), ("--exclude", exclude, out.exclude)):
        for item in items or []:
            if not item or not item.strip():
                raise UserError(f"{flag}: empty filter; give a path glob or KEY=PATTERN")
            match = _META_FILTER.match(item)
            key, pattern = (match.group(1), match.group(2)) if match else (PATH_KEY, item)
            if not pattern:
                raise UserError(f"{flag} {item!r}: empty pattern after '='")
            into.setdefault(key, []).append(pattern)
    return out


def relative_path(track: Track, roots: list[Path]) -> str:
    """The track's file relative to the SOURCE holding it (posix), else its ``rel`` hint, else its name."""
    rel = (track.meta.get("extra") or {}).get("_rel") if isinstance(track.meta.get("extra"), dict) else None
    if rel:
        return str(rel)
    if track.audio:
        audio = Path(track.audio)
        best: str | None = None
        for root in roots:
            base = root.parent if root.is_file() else root
            try:
                candidate = Path(os.path.relpath(audio, base.resolve() if base.exists() else base))
            except ValueError:
                continue
            if ".." not in candidate.parts and (best is None or len(str(candidate)) < len(best)):
                best = candidate.as_posix()
        if best is not None:
            return best
    return track.name


def _values(track: Track, key: str) -> list[str]:
    value: Any = track.meta.get(key)
    if value is None and isinstance(track.meta.get("extra"), dict):
        value = track.meta["extra"].get(key)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _matches(track: Track, key: str, patterns: list[str], rel: str) -> bool:
    if key == PATH_KEY:
        return any(fnmatch.fnmatchcase(rel, p) for p in patterns)
    values = [v.lower() for v in _values(track, key)]
    return any(fnmatch.fnmatchcase(v, p.lower()) for v in values for p in patterns)


def filter_tracks(tracks: list[Track], roots: list[Path], flt: TrackFilter) -> list[Track]:
    """The tracks that pass ``flt`` (module doc), in their order."""
    if not flt.active:
        return list(tracks)
    kept = []
    for track in tracks:
        rel = relative_path(track, roots)
        if not all(_matches(track, key, pats, rel) for key, pats in flt.include.items()):
            continue
        if any(_matches(track, key, pats, rel) for key, pats in flt.exclude.items()):
            continue
        kept.append(track)
    return kept


def subset_rank(track_id: str, seed: int) -> int:
    """The rank of a track for ``--max-tracks``: the first 64 bits of sha256(``subset:<seed>:<track id>``)."""
    return int(hashlib.sha256(f"subset:{seed}:{track_id}".encode()).hexdigest()[:16], 16)


def choose_subset(tracks: list[Track], max_tracks: int | None, seed: int, keep: Iterable[str] = ()) -> list[Track]:
    """At most ``max_tracks`` of ``tracks`` (all when None): those in ``keep`` first, then by
    :func:`subset_rank`; returned in their original order."""
    if max_tracks is None or len(tracks) <= max_tracks:
        return list(tracks)
    if max_tracks < 1:
        raise UserError(f"--max-tracks must be at least 1, got {max_tracks}")
    keep = set(keep)
    ranked = sorted(tracks, key=lambda t: (t.track_id not in keep, subset_rank(t.track_id, seed), t.track_id))
    chosen = {t.track_id for t in ranked[:max_tracks]}
    return [t for t in tracks if t.track_id in chosen]
