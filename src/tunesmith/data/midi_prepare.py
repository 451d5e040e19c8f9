"""MIDI data preparation: a folder of .mid/.midi files (or a MAESTRO-layout folder with its metadata
CSV) → columnar note arrays with per-piece metadata, splits, and a list of rejected files.

Layout of a prepared folder ``DIR``::

    DIR/midi_dataset.json         format, settings, counts (written last: its presence means complete)
    DIR/pieces.jsonl              one piece per line: id, path, composer, title, split, year, duration,
                                  note_start, note_count, pedal_start, pedal_count, dataset, key, tempo
    DIR/notes/{pitch,velocity}.npy  uint8 [N];  DIR/notes/{start,end}.npy float32 [N] (s from piece start)
    DIR/notes/pedals.npy          float32 [P, 2] sustain-pedal (down, up) intervals in s
    DIR/rejected.jsonl            files that could not be read or hold no notes, with the reason

Pieces' notes are contiguous and sorted by (start, pitch). Preparation is resumable: each file's
notes are parked under ``DIR/.parts`` until the final arrays are assembled.

Metadata filters (for named evaluation splits) are ``field OP value`` clauses joined by ``&``, with
``OP`` one of ``~`` (contains), ``!~``, ``=`` (equals), ``!=``; a value may list alternatives with ``|``.
Text is compared without case and accents: ``composer~frederic`` matches "Frédéric Chopin".

A piece's ``dataset`` is the source it came from (``--dataset``: a name, default the source folder's name;
``@folder``: each file's first folder under the source, so one preparation can hold several datasets);
``key`` (e.g. "eb major", "" when unknown) and ``tempo`` (quarter notes per minute, 0 when unknown) come
from the file's first key signature and tempo event. They feed the conditioning tokens
(:mod:`tunesmith.models.midi.conditioning`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tunesmith.errors import UserError
from tunesmith.fileio import atomic_path, atomic_write_text
from tunesmith.models.midi.notes import Notes, read_midi, read_midi_meta

log = logging.getLogger("tunesmith.prepare_midi")

FORMAT = "tunesmith-midi-notes"
FORMAT_VERSION = 1
MIDI_SUFFIXES = (".mid", ".midi")
MAESTRO_COLUMNS = ("canonical_composer", "canonical_title", "split", "midi_filename", "duration")
CSV_SPLITS = {"train": "train", "validation": "valid", "valid": "valid", "test": "test"}
FILTER_FIELDS = ("composer", "title", "split", "path", "year", "dataset")
FOLDER_DATASETS = "@folder"  # --dataset: each file's first folder under the source names its dataset
DURATION_TOLERANCE_S = 5.0  # a CSV duration further than this from the file's is reported (the file's is kept)


@dataclasses.dataclass
class PrepareSettings:
    """What decides the content of a prepared folder (a re-run with other settings needs --force)."""

    sustain: str = "apply"  # apply | events | ignore (see tunesmith.models.midi.notes.read_midi)
    valid_fraction: float = 0.1  # without a CSV: share of pieces in valid, chosen by a hash of the piece
    test_fraction: float = 0.0
    filter: str = ""  # metadata filter (module docstring); only the matching files are prepared
    dataset: str = ""  # the pieces' source dataset: a name, "" = the source folder's name, "@folder" (docstring)


@dataclasses.dataclass
class SourceFile:
    path: Path  # absolute
    rel: str  # relative to the source folder, "/"-separated
    composer: str = ""
    title: str = ""
    split: str = ""
    year: str = ""
    duration: float = 0.0  # from the CSV; 0 when unknown
    dataset: str = ""  # the source dataset (PrepareSettings.dataset)


# --------------------------------------------------------------------------- text matching


def normalize_text(text: str) -> str:
    """Case-, accent- and spacing-insensitive form: "Frédéric  CHOPIN" → "frederic chopin"."""
    decomposed = unicodedata.normalize("NFKD", str(text))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


_CLAUSE = re.compile(r"^\s*([A-Za-z_]+)\s*(!~|!=|~|=)\s*(.*?)\s*$")


def parse_filter(expr: str, *, field_name: str = "filter") -> Callable[[dict], bool]:
    """A metadata filter expression → predicate over piece dicts (see the module docstring)."""
    clauses = []
    for part in str(expr).split("&"):
        match = _CLAUSE.match(part)
        if not match or not match.group(3):
            raise UserError(
                f"{field_name}: cannot read clause {part.strip()!r} of {expr!r}; write field~text, field=text, "
                f"field!~text or field!=text joined by '&' (fields: {', '.join(FILTER_FIELDS)})"
            )
        key, op, value = match.groups()
        if key not in FILTER_FIELDS:
            raise UserError(f"{field_name}: unknown field {key!r} in {expr!r}; fields: {', '.join(FILTER_FIELDS)}")
        options = [normalize_text(v) for v in value.split("|") if v.strip()]
        if key == "split":
            options = [CSV_SPLITS.get(v, v) for v in options]
        clauses.append((key, op, options))

    def predicate(piece: dict) -> bool:
        for key, op, options in clauses:
            text = normalize_text(piece.get(key, ""))
            hit = any(o in text for o in options) if "~" in op else any(o == text for o in options)
            if hit == op.startswith("!"):
                return False
        return True

    return predicate


def mentions_split(expr: str) -> bool:
    """Whether a filter expression sets the split itself (else callers restrict it to a base split)."""
    return any((m := _CLAUSE.match(part)) and m.group(1) == "split" for part in str(expr).split("&"))


# --------------------------------------------------------------------------- sources


def find_metadata_csv(source: Path) -> Path | None:
    """The MAESTRO-style CSV of a source folder (or the CSV itself), None for a plain folder."""
    if source.is_file() and source.suffix.lower() == ".csv":
        return source
    candidates = []
    for path in sorted(source.glob("*.csv")):
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        if "midi_filename" in header:
            candidates.append(path)
    if len(candidates) > 1:
        named = [c for c in candidates if c.name.lower().startswith("maestro")]
        if len(named) == 1:
            return named[0]
        raise UserError(
            f"{source}: several metadata CSVs ({', '.join(c.name for c in candidates)}); pass the one to use as SOURCE"
        )
    return candidates[0] if candidates else None


def read_maestro_csv(csv_path: Path) -> tuple[list[SourceFile], list[dict]]:
    """Rows of a MAESTRO-layout CSV → source files, plus rejected rows (missing file, unknown split)."""
    root = csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MAESTRO_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                f"{csv_path}: missing column(s) {', '.join(missing)}; a MAESTRO-layout CSV needs "
                f"{', '.join(MAESTRO_COLUMNS)}"
            )
        rows = list(reader)
    files, rejected = [], []
    first_line: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        rel = row["midi_filename"].strip().replace("\\", "/")
        if rel in first_line:
            reason = f"{csv_path.name} line {line}: duplicate of line {first_line[rel]} (the first row is kept)"
            log.warning("%s: %s", rel, reason)
            rejected.append({"path": rel, "reason": reason})
            continue
        first_line[rel] = line
        split = CSV_SPLITS.get(row["split"].strip().lower())
        if split is None:
            rejected.append({"path": rel, "reason": f"{csv_path.name} line {line}: unknown split {row['split']!r}"})
            continue
        path = root / rel
        if not path.is_file():
            rejected.append({"path": rel, "reason": f"{csv_path.name} line {line}: file not found"})
            continue
        try:
            duration = float(row["duration"] or 0.0)
        except ValueError:
            duration = 0.0
        files.append(
            SourceFile(
                path=path,
                rel=rel,
                composer=row["canonical_composer"].strip(),
                title=row["canonical_title"].strip(),
                split=split,
                year=str(row.get("year", "") or "").strip(),
                duration=duration,
            )
        )
    return files, rejected


def scan_folder(source: Path) -> list[SourceFile]:
    """Every .mid/.midi file under ``source`` (recursively, sorted), metadata left empty."""
    paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    return [SourceFile(path=p, rel=p.relative_to(source).as_posix(), title=p.stem) for p in paths]


def piece_hash(key: str) -> float:
    """A stable number in [0, 1) from a piece key (same on every machine and Python version)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64


def assign_hash_splits(files: list[SourceFile], valid_fraction: float, test_fraction: float) -> None:
    """Deterministic by piece: performances of one piece (composer + title, else the file) share a split."""
    if not (valid_fraction >= 0 and test_fraction >= 0 and valid_fraction + test_fraction < 1):
        raise UserError("--valid-fraction and --test-fraction must be >= 0 and sum to less than 1")

    def key(f: SourceFile) -> str:
        return f"{normalize_text(f.composer)}|{normalize_text(f.title)}" if f.composer else f.rel.lower()

    for f in files:
        u = piece_hash(key(f))
        f.split = "valid" if u < valid_fraction else "test" if u < valid_fraction + test_fraction else "train"
    keys = sorted({key(f) for f in files}, key=piece_hash)
    if valid_fraction > 0 and len(keys) >= 2 and not any(f.split == "valid" for f in files):
        first = keys[0]  # too few pieces for the fraction to pick one: take the lowest hash
        for f in files:
            if key(f) == first:
                f.split = "valid"


# --------------------------------------------------------------------------- prepare


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def _part_name(rel: str) -> str:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()[:20] + ".npz"


def _read_part(path: Path) -> Notes | str:
    with np.load(path) as z:
        if "error" in z.files:
            return str(z["error"])
        return Notes(z["pitch"], z["start"], z["end"], z["velocity"], z["pedals"])


def _write_part(path: Path, result: Notes | str) -> None:
    with atomic_path(path, fsync=False) as tmp:  # parts are a scratch cache: no fsync
        if isinstance(result, str):
            np.savez(tmp, error=np.asarray(result))
        else:
            np.savez(
                tmp,
                pitch=result.pitch,
                start=result.start,
                end=result.end,
                velocity=result.velocity,
                pedals=result.pedals,
            )


def _metadata(file: SourceFile) -> dict:
    """The fields a metadata filter sees for a source file (as in pieces.jsonl)."""
    return {
        "composer": file.composer,
        "title": file.title,
        "split": file.split,
        "path": file.rel,
        "year": file.year,
        "dataset": file.dataset,
    }


def assign_datasets(files: list[SourceFile], setting: str, source_name: str) -> None:
    """Set each file's ``dataset`` from ``PrepareSettings.dataset`` (see the module docstring)."""
    for file in files:
        if setting == FOLDER_DATASETS:
            parts = file.rel.split("/")
            file.dataset = parts[0] if len(parts) > 1 else source_name
        else:
            file.dataset = setting or source_name


def _file_meta(file: SourceFile) -> dict:
    """Key and tempo of a parsed file (nothing when symusic cannot read its header again)."""
    try:
        return read_midi_meta(file.path)
    except UserError:
        return {"key": "", "tempo": 0.0}


def _parse(file: SourceFile, sustain: str) -> Notes | str:
    """Notes of one file (times in seconds from the file's start), or the reason it is rejected."""
    try:
        notes = read_midi(file.path, sustain=sustain)
    except UserError as err:
        return str(err)
    if not len(notes):
        return "no notes"
    return notes


def prepare_midi(
    source: str | Path,
    out: str | Path,
    *,
    settings: PrepareSettings | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Prepare ``source`` into ``out`` (see the module docstring); returns the dataset summary."""
    settings = settings or PrepareSettings()
    if settings.sustain not in ("apply", "events", "ignore"):
        raise UserError(f"--sustain {settings.sustain!r}: expected apply, events or ignore")
    source, out = Path(source), Path(out)
    if not source.exists():
        raise UserError(f"{source}: no such folder or CSV")
    summary_path = out / "midi_dataset.json"
    wanted = {"source": str(source.resolve()), **dataclasses.asdict(settings)}
    if summary_path.is_file() and not force:
        summary = json.loads(summary_path.read_text())
        defaults = dataclasses.asdict(PrepareSettings())  # keys added since a folder was prepared
        done = {k: summary.get(k, defaults.get(k)) for k in wanted}
        if done == wanted:
            log.info("%s is already prepared (%d pieces); --force redoes it", out, summary.get("pieces", 0))
            return summary
        changed = ", ".join(f"{k}: {done[k]!r} → {wanted[k]!r}" for k in wanted if done[k] != wanted[k])
        raise UserError(f"{out} was prepared with other settings ({changed}); pass --force or another --out")
    if force and out.exists():
        for name in ("midi_dataset.json", "pieces.jsonl", "rejected.jsonl", "notes", ".parts"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)

    csv_path = find_metadata_csv(source)
    if csv_path is not None:
        files, rejected = read_maestro_csv(csv_path)
        split_rule = f"csv:{csv_path.name}"
    else:
        if not source.is_dir():
            raise UserError(f"{source}: expected a folder of .mid/.midi files or a MAESTRO-layout CSV")
        files, rejected = scan_folder(source), []
        assign_hash_splits(files, settings.valid_fraction, settings.test_fraction)
        split_rule = "hash"
    if not files:
        raise UserError(f"{source}: no MIDI files found (looked for {', '.join(MIDI_SUFFIXES)})")
    assign_datasets(files, settings.dataset, (source.parent if source.is_file() else source).resolve().name)
    if settings.filter:
        keep = parse_filter(settings.filter, field_name="--filter")
        total = len(files)
        files = [f for f in files if keep(_metadata(f))]
        log.info("--filter %s: %d of %d files", settings.filter, len(files), total)
        if not files:
            raise UserError(f"--filter {settings.filter!r} matches none of the {total} files of {source}")

    parts = out / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    results = _parse_all(files, parts, settings.sustain, progress)
    summary = _assemble(out, files, results, rejected)
    summary.update(wanted)
    summary.update(format=FORMAT, version=FORMAT_VERSION, split_rule=split_rule)
    atomic_write_text(summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(parts, ignore_errors=True)
    log.info(
        "prepared %d pieces (%d notes) into %s; %d rejected%s",
        summary["pieces"],
        summary["notes"],
        out,
        summary["rejected"],
        f" (see {out / 'rejected.jsonl'})" if summary["rejected"] else "",
    )
    return summary


def _parse_all(files: list[SourceFile], parts: Path, sustain: str, progress: bool) -> list[Notes | str]:
    from tunesmith.runtime import EpochProgress, progress_enabled

    bar = EpochProgress(
        "reading MIDI", len(files), enabled=progress_enabled(progress), log_every=max(len(files) // 10, 1)
    )
    results: list[Notes | str] = []
    for file in files:
        bar.update({})
        part = parts / _part_name(file.rel)
        if part.is_file():
            try:
                results.append(_read_part(part))
                continue
            except (OSError, ValueError, KeyError):
                part.unlink(missing_ok=True)  # a part cut short by a kill: parse the file again
        result = _parse(file, sustain)
        _write_part(part, result)
        results.append(result)
    bar.close()
    return results


def _assemble(out: Path, files: list[SourceFile], results: list[Notes | str], rejected: list[dict]) -> dict:
    notes_dir = out / "notes"
    notes_dir.mkdir(parents=True, exist_ok=True)
    pieces, kept = [], []
    rejected = list(rejected)
    n_notes = n_pedals = 0
    mismatched: list[str] = []
    for file, result in zip(files, results, strict=True):
        if isinstance(result, str):
            rejected.append({"path": file.rel, "reason": result})
            log.warning("skipped %s: %s", file.rel, result)
            continue
        duration = float(result.end.max())
        if file.duration and abs(file.duration - duration) > DURATION_TOLERANCE_S:
            mismatched.append(f"{file.rel} ({file.duration:.1f} s in the CSV, {duration:.1f} s in the file)")
        pieces.append(
            {
                "id": len(pieces),
                "path": file.rel,
                "composer": file.composer,
                "title": file.title,
                "split": file.split,
                "year": file.year,
                "duration": round(duration, 3),
                "note_start": n_notes,
                "note_count": len(result),
                "pedal_start": n_pedals,
                "pedal_count": len(result.pedals),
                "dataset": file.dataset,
                **_file_meta(file),
            }
        )
        kept.append(result)
        n_notes += len(result)
        n_pedals += len(result.pedals)
    if not pieces:
        raise UserError(f"no readable MIDI file with notes among {len(files)} (see the warnings above)")
    if mismatched:
        log.warning(
            "%d file(s) last more than %.0f s longer or shorter than their CSV duration; the files' durations "
            "are used: %s",
            len(mismatched),
            DURATION_TOLERANCE_S,
            "; ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else ""),
        )

    def cat(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([getattr(n, name) for n in kept]).astype(dtype)

    _atomic_save(notes_dir / "pitch.npy", cat("pitch", np.uint8))
    _atomic_save(notes_dir / "velocity.npy", np.clip(cat("velocity", np.int16), 1, 127).astype(np.uint8))
    _atomic_save(notes_dir / "start.npy", cat("start", np.float32))
    _atomic_save(notes_dir / "end.npy", cat("end", np.float32))
    _atomic_save(notes_dir / "pedals.npy", np.concatenate([n.pedals for n in kept]).astype(np.float32).reshape(-1, 2))
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pieces)
    atomic_write_text(out / "pieces.jsonl", lines)
    atomic_write_text(out / "rejected.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
    splits: dict[str, int] = {}
    for p in pieces:
        splits[p["split"]] = splits.get(p["split"], 0) + 1
    return {
        "pieces": len(pieces),
        "notes": n_notes,
        "pedals": n_pedals,
        "rejected": len(rejected),
        "splits": splits,
        "duration_mismatches": len(mismatched),
    }


# --------------------------------------------------------------------------- reading


class MidiNotesStore:
    """Read side of a prepared folder: piece metadata and each piece's :class:`Notes` (memory-mapped)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        summary_path = self.root / "midi_dataset.json"
        if not summary_path.is_file():
            raise UserError(
                f"{self.root}: not a prepared MIDI dataset (no midi_dataset.json); "
                f"run `tunesmith prepare-midi SOURCE --out {self.root}` first"
            )
        self.summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if self.summary.get("format") != FORMAT or self.summary.get("version", 0) > FORMAT_VERSION:
            raise UserError(f"{summary_path}: format {self.summary.get('format')!r} is not one this tunesmith reads")
        with (self.root / "pieces.jsonl").open(encoding="utf-8") as f:
            self.pieces: list[dict] = [json.loads(line) for line in f if line.strip()]
        source_name = Path(str(self.summary.get("source") or self.root)).name
        for piece in self.pieces:  # folders prepared before pieces had a dataset: the source folder's name
            piece.setdefault("dataset", self.summary.get("dataset") or source_name)
        arrays = {}
        for name in ("pitch", "velocity", "start", "end", "pedals"):
            arrays[name] = np.load(self.root / "notes" / f"{name}.npy", mmap_mode="r")
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self.pieces)

    def notes(self, piece_id: int) -> Notes:
        """Notes of one piece, times in seconds from the piece's start."""
        p = self.pieces[piece_id]
        a, s = self._arrays, slice(p["note_start"], p["note_start"] + p["note_count"])
        pedals = a["pedals"][p["pedal_start"] : p["pedal_start"] + p["pedal_count"]]
        return Notes(a["pitch"][s], a["start"][s], a["end"][s], a["velocity"][s], pedals)

    def select(self, split: str | None = None, where: str | None = None, *, name: str = "filter") -> list[int]:
        """Piece ids in ``split`` (None: all) matching the filter expression ``where`` (None: all)."""
        predicate = parse_filter(where, field_name=name) if where else (lambda _p: True)
        return [p["id"] for p in self.pieces if (split is None or p["split"] == split) and predicate(p)]

    def splits(self) -> list[str]:
        return sorted({p["split"] for p in self.pieces})


STORE_FILES = (
    "midi_dataset.json",
    "pieces.jsonl",
    *(f"notes/{n}.npy" for n in ("pitch", "velocity", "start", "end", "pedals")),
)


def store_fingerprint(root: str | Path) -> dict:
    """Fingerprint of a prepared MIDI folder (see ``tunesmith.data.prepare.fingerprint``): its summary,
    piece list (rows = pieces) and note arrays."""
    from tunesmith.data.prepare.fingerprint import file_digest

    root = Path(root)
    files = {
        name: file_digest(root / name, rows=name.endswith(".jsonl")) for name in STORE_FILES if (root / name).is_file()
    }
    return {"kind": "midi-store", "source": str(root.resolve()), "files": files}
