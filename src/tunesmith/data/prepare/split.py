"""The train/valid split of a prepared dataset: by track, deterministic, and stable when tracks are added.

Every track has a number ``u`` in [0, 1): its split hint when the source gives one (synthetic tracks:
an exact stratified share), else a hash of (seed, track id). :func:`assign_splits` decides, in order:

1. A track with a completion record (``DIR/state/tracks.jsonl``) keeps the split recorded: a re-run,
   a resume or added tracks never move a prepared track between train and valid.
2. A track with a split hint is valid when ``u < valid_fraction``.
3. Large datasets (:data:`SMALL_DATASET_TRACKS` hashed tracks or more): a new track is valid when
   ``u < valid_fraction``. Each track's split depends on its own hash only, so any order of additions
   gives the same split; the share is ``valid_fraction`` within sampling noise (about ±√(N·fraction) tracks).
4. Small datasets: the target is ``k = round(valid_fraction × N)`` of the ``N`` hashed tracks, at least
   one when ``valid_fraction > 0`` and ``N ≥ 2``, never all of them. The new tracks, lowest ``u``
   first, go to valid until ``k`` tracks (recorded ones included) are valid; the rest train.

Guarantees: prepared from scratch, a small dataset's valid split is exactly its ``k`` lowest-hash
tracks (within one track of ``valid_fraction × N``), a pure function of (track ids, seed, fraction);
a killed-and-resumed prepare assigns exactly what an uninterrupted one would (``N`` counts every
scanned track, rejected ones too). Adding tracks never moves an existing one; the valid count is
then ``max(k, tracks already valid)``, so it stays within one track of the fraction unless the
recorded split already held more (a dataset prepared before this rule). The split of a dataset
prepared in steps may differ from that of the same tracks prepared at once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from tunesmith.data.sources import Track

SPLITS = ("train", "valid")
SMALL_DATASET_TRACKS = 1000


def split_number(track: Track, seed: int) -> float:
    """``u`` in [0, 1): the track's split hint, else a hash of (seed, track id)."""
    if track.split_hint is not None:
        return float(track.split_hint)
    digest = hashlib.sha256(f"{seed}:{track.track_id}".encode()).hexdigest()
    return int(digest[:16], 16) / 2**64


def split_of(track: Track, seed: int, valid_fraction: float) -> str:
    """The per-track rule (large datasets, hinted tracks): 'valid' when ``u < valid_fraction``."""
    return "valid" if split_number(track, seed) < valid_fraction else "train"


def valid_target(num_tracks: int, valid_fraction: float) -> int:
    """``round(valid_fraction × num_tracks)`` (halves up), at least 1 when the fraction is positive and
    there are two tracks or more, at most ``num_tracks - 1``."""
    if valid_fraction <= 0 or num_tracks < 2:
        return 0
    return min(num_tracks - 1, max(1, math.floor(valid_fraction * num_tracks + 0.5)))


def assign_splits(
    tracks: Iterable[Track], seed: int, valid_fraction: float, recorded: dict[str, str] | None = None
) -> dict[str, str]:
    """track id → 'train' or 'valid' for every track (rules in the module doc); ``recorded``: the splits of
    tracks prepared before (track id → split), kept as they are."""
    recorded = {tid: s for tid, s in (recorded or {}).items() if s in SPLITS}
    tracks = list(tracks)
    out: dict[str, str] = {}
    hashed: list[Track] = []
    for track in tracks:
        if track.track_id in recorded:
            out[track.track_id] = recorded[track.track_id]
        elif track.split_hint is not None:
            out[track.track_id] = split_of(track, seed, valid_fraction)
        if track.split_hint is None:
            hashed.append(track)
    new = [t for t in hashed if t.track_id not in out]
    if len(hashed) >= SMALL_DATASET_TRACKS:
        out.update({t.track_id: split_of(t, seed, valid_fraction) for t in new})
        return out
    already = sum(1 for t in hashed if out.get(t.track_id) == "valid")
    wanted = max(0, valid_target(len(hashed), valid_fraction) - already)
    new.sort(key=lambda t: (split_number(t, seed), t.track_id))
    for i, track in enumerate(new):
        out[track.track_id] = "valid" if i < wanted else "train"
    return out
