"""Prepared-dataset manifests: AudioCraft's ``data.jsonl`` form, sidecar metadata, ``dataset.json``.

Layout of a prepared dataset ``DIR``::

    DIR/dataset.json                 settings, counts, hours per split, caption coverage
    DIR/egs/{train,valid}/data.jsonl one AudioMeta line per segment (AudioCraft's manifest form)
    DIR/segments/<track>/<n>.wav     the segments, each with a sidecar <n>.json (music fields)
    DIR/rejected.jsonl               file and reason for every input not used

Paths in ``data.jsonl`` are **absolute**, as AudioCraft expects (it opens them from its own
working directory). ``prepare`` rewrites them when it runs again, so a moved dataset is fixed by
re-running the same command; until then :func:`resolve_path` also finds a segment whose absolute
path went stale by re-rooting it under the dataset's current folder. Relative paths (written by
hand or other tools) are read relative to the dataset folder.

``info_path`` is null: AudioCraft parses it as ``"archive.zip:member"``. Metadata lives in a
sidecar next to the audio with the same stem and a ``.json`` suffix, where AudioCraft's
MusicDataset looks for it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

SPLITS: tuple[str, ...] = ("train", "valid")
DATASET_JSON = "dataset.json"
SEGMENTS_DIR = "segments"

# AudioCraft's MusicInfo fields: all present in every sidecar (empty when unknown), plus ours.
MUSIC_FIELDS: tuple[str, ...] = (
    "title",
    "artist",
    "key",
    "bpm",
    "genre",
    "moods",
    "description",
    "name",
    "instrument",
    "keywords",
)
LIST_FIELDS: frozenset[str] = frozenset({"moods", "keywords"})


@dataclass
class ManifestEntry:
    """One segment of a manifest: AudioCraft's AudioMeta fields.

    ``path`` is the string as written in data.jsonl (see :func:`resolve_path`), ``duration`` in
    seconds, ``sample_rate`` in Hz, ``amplitude`` the peak absolute sample, ``weight`` a sampling
    weight, ``info_path`` None unless an AudioCraft zip reference.
    """

    path: str
    duration: float
    sample_rate: int
    amplitude: float | None = None
    weight: float | None = None
    info_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def manifest_path(dataset_dir: str | Path, split: str) -> Path:
    """``DIR/egs/<split>/data.jsonl``."""
    return Path(dataset_dir) / "egs" / split / "data.jsonl"


def _entry_from_dict(data: Any, where: str) -> ManifestEntry:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in ("path", "duration", "sample_rate") if k not in data]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)}; each line needs path, duration, sample_rate")
    path = data["path"]
    if not isinstance(path, str) or not path:
        raise UserError(f"{where}: 'path' must be a non-empty string, got {path!r}")
    try:
        duration = float(data["duration"])
        sample_rate = int(data["sample_rate"])
        amplitude = None if data.get("amplitude") is None else float(data["amplitude"])
        weight = None if data.get("weight") is None else float(data["weight"])
    except (TypeError, ValueError) as err:
        hint = "duration/amplitude/weight are floats, sample_rate an int"
        raise UserError(f"{where}: bad number ({err}); {hint}") from None
    if not (math.isfinite(duration) and duration > 0):
        raise UserError(f"{where}: 'duration' must be a positive number of seconds, got {data['duration']!r}")
    if sample_rate <= 0:
        raise UserError(f"{where}: 'sample_rate' must be a positive integer, got {data['sample_rate']!r}")
    info_path = data.get("info_path")
    return ManifestEntry(path, duration, sample_rate, amplitude, weight, None if info_path is None else str(info_path))


def read_manifest(dataset_dir: str | Path, split: str) -> list[ManifestEntry]:
    """Entries of ``DIR/egs/<split>/data.jsonl`` (a ``.jsonl.gz`` is read too); blank lines skipped.

    UserError when the file is missing (naming the dataset and how to make one) or a line is
    broken (naming file and line number).
    """
    path = manifest_path(dataset_dir, split)
    opener: Any = open
    if not path.is_file() and path.with_suffix(".jsonl.gz").is_file():
        import gzip

        path, opener = path.with_suffix(".jsonl.gz"), gzip.open
    if not path.is_file():
        have = [s for s in SPLITS if manifest_path(dataset_dir, s).is_file()]
        make = "; create one with `tunesmith prepare ... --out DIR`"
        hint = f" (this dataset has: {', '.join(have)})" if have else make
        raise UserError(f"{path}: no {split!r} manifest{hint}")
    entries: list[ManifestEntry] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg}); fix or delete that line") from None
            entries.append(_entry_from_dict(data, where))
    return entries


def spread_indices(total: int, count: int) -> list[int]:
    """``count`` indices of ``range(total)`` spread evenly from the first to the last (fewer when ``count`` >
    ``total``; sorted, no repeats): the same segments every time, whatever the order of the calls."""
    import numpy as np

    return sorted({round(i) for i in np.linspace(0, total - 1, min(count, total))})


def write_manifest(path: str | Path, entries: list[ManifestEntry]) -> bool:
    """Write entries as JSON lines atomically; returns False (and leaves the file) when unchanged."""
    from tunesmith.fileio import atomic_write_text

    text = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in entries)
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def _recorded_root(dataset_dir: Path) -> str | None:
    """The absolute folder the dataset was prepared in (dataset.json "root"), cached per file version."""
    try:
        mtime = (dataset_dir / DATASET_JSON).stat().st_mtime_ns
    except OSError:
        return None
    return _root_of(str(dataset_dir), mtime)


@functools.lru_cache(maxsize=64)
def _root_of(dataset_dir: str, mtime_ns: int) -> str | None:
    try:
        root = read_dataset_json(dataset_dir).get("root")
    except UserError:
        return None
    return root if isinstance(root, str) else None


def resolve_path(dataset_dir: str | Path, entry: ManifestEntry | str) -> Path:
    """The file an entry points to: relative paths from ``dataset_dir``; absolute paths as they are,
    or re-rooted under ``dataset_dir`` when the dataset was moved or copied (the root recorded in
    dataset.json differs from ``dataset_dir``) and the re-rooted file exists."""
    dataset_dir = Path(dataset_dir)
    raw = entry.path if isinstance(entry, ManifestEntry) else str(entry)
    path = Path(raw)
    if not path.is_absolute():
        return dataset_dir / path
    root = _recorded_root(dataset_dir)
    if root and Path(root) != dataset_dir.absolute():  # moved or copied: prefer the files under dataset_dir
        try:
            moved = dataset_dir / path.relative_to(root)
        except ValueError:
            moved = None
        if moved is not None and moved.exists():
            return moved
    if path.exists():
        return path
    parts = path.parts
    if SEGMENTS_DIR in parts:  # last resort: DIR/segments/... under the current folder
        tail = parts[len(parts) - 1 - parts[::-1].index(SEGMENTS_DIR) :]
        moved = dataset_dir.joinpath(*tail)
        if moved.exists():
            return moved
    return path


def info_path_for(dataset_dir: str | Path, entry: ManifestEntry) -> Path:
    """The sidecar of an entry: ``info_path`` when it is a plain path, else the audio path with ``.json``."""
    if entry.info_path and ":" not in entry.info_path:
        return resolve_path(dataset_dir, entry.info_path)
    return resolve_path(dataset_dir, entry).with_suffix(".json")


def read_info(dataset_dir: str | Path, entry: ManifestEntry) -> dict[str, Any]:
    """The sidecar metadata of a segment (description, genre, bpm, key, instrument, moods, keywords,
    track_id, transcript, ...); every music field is present (``""``/``[]``/None when unknown).
    UserError when the sidecar is missing or not a JSON object."""
    path = info_path_for(dataset_dir, entry)
    if not path.is_file():
        raise UserError(f"{path}: missing sidecar metadata for {entry.path}; re-run `tunesmith prepare` on the dataset")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable sidecar metadata ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: sidecar metadata must be a JSON object")
    for field in MUSIC_FIELDS:
        data.setdefault(field, [] if field in LIST_FIELDS else None if field == "bpm" else "")
    data.setdefault("track_id", "")
    data.setdefault("transcript", "")
    return data


def read_dataset_json(dataset_dir: str | Path) -> dict[str, Any]:
    """``DIR/dataset.json`` (settings, counts, hours per split, caption coverage). UserError if absent."""
    path = Path(dataset_dir) / DATASET_JSON
    if not path.is_file():
        raise UserError(f"{path}: not found; is {dataset_dir} a dataset made by `tunesmith prepare`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable ({err}); re-run `tunesmith prepare` with the same --out") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data
