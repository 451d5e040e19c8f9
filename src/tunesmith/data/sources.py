"""Input sources for ``tunesmith prepare``: each turns a path into tracks (audio + metadata).

A source ``scan`` returns :class:`Track` items to process and :class:`Rejection` items for inputs
that cannot be used (bad metadata rows, audio with no metadata row, files that are not audio).
A missing or unreadable *metadata file* that the whole source depends on is a UserError.

Kinds:
    folder     audio files under a folder; a sidecar ``<stem>.txt`` (caption) or ``<stem>.json``
               (music fields) next to each file, else the parent folder's name as genre.
               Hidden files and folders (names starting with ".") are skipped.
               With ``speech=True`` (``prepare --speech``) the folder holds speech: ``<stem>.txt`` is the
               clip's transcript (required: a clip without one, or with an empty one, is skipped with
               the reason), each clip is one whole utterance (never cut), and a clip under a sub-folder
               gets that first-level folder's name as ``speaker`` (``SRC/<speaker>/<clip>.wav``, also
               ``SRC/<speaker>/<chapter>/<clip>.wav``); a ``"speaker"`` in a ``<stem>.json`` sidecar wins.
    fma        ``fma_metadata/tracks.csv`` + ``genres.csv`` beside ``fma_small|medium|large|full``.
    jamendo    MTG-Jamendo ``autotagging*.tsv`` (genre---, instrument---, mood/theme--- tags).
    ljspeech   ``metadata.csv`` (``id|text|normalized_text``, optionally a fourth column ``speaker``:
               ``id|text|normalized_text|speaker``, normalized text may be empty) and ``wavs/<id>.wav``.

Transcripts (and speaker names) are stored whitespace-collapsed and in Unicode NFC
(:func:`tunesmith.audio.transcript.clean_transcript`, the normalisation the speech models use too).
Rejections of transcribed clips carry a ``code`` (``no_transcript``) counted in the prepare summary.
    synthetic  the built-in generator (:mod:`tunesmith.data.synthetic`).
    hf-dataset a Hugging Face ``datasets`` dataset on disk (save_to_disk or parquet files):
               :mod:`tunesmith.data.hf_dataset`.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.audio.transcript import clean_transcript
from tunesmith.data.manifest import LIST_FIELDS, MUSIC_FIELDS
from tunesmith.errors import UserError

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".aif", ".aiff", ".aifc"}
    | {".wma", ".webm", ".mka", ".au", ".snd", ".caf", ".w64", ".rf64"}
)
KINDS: tuple[str, ...] = ("folder", "fma", "jamendo", "ljspeech", "synthetic", "hf-dataset")
NO_TRANSCRIPT = "no_transcript"  # Rejection.code of a speech clip without a (non-empty) transcript
TOO_LONG = "too_long"  # completion-record code of a transcribed clip longer than the maximum (prepare/track.py)


@dataclass
class Track:
    """One input track. ``audio`` is an absolute path (None for synthetic, which uses ``synth``)."""

    track_id: str  # stable and unique across sources, e.g. "fma:2", "folder:music/rock/a.mp3"
    kind: str
    name: str  # readable, used to name the output folder and the "name" field
    audio: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # music fields known so far
    synth: dict[str, Any] | None = None
    whole: bool = False  # a transcribed utterance: never cut into segments
    split_hint: float | None = None  # a number in [0, 1) that replaces the id hash for the split
    # audio stored inside a dataset file (hf-dataset): {"file", "format", "column", "batch", "row", "suffix"}
    blob: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        """Changes when the input (file size/mtime, metadata, synth params) changes."""
        parts: list[Any] = [self.meta, self.synth, self.whole]
        if self.blob is not None:  # the dataset file holding the bytes stands for the audio file
            parts.append(self.blob)
            try:
                st = os.stat(self.blob["file"])
                parts += [st.st_size, st.st_mtime_ns]
            except OSError:
                parts.append("missing")
        if self.audio:
            try:
                st = os.stat(self.audio)
                parts += [st.st_size, st.st_mtime_ns]
            except OSError:
                parts.append("missing")
        text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Rejection:
    """An input that is not used: file (or ``file:line``) and reason."""

    file: str
    reason: str
    track_id: str | None = None
    code: str | None = None  # a class of rejection counted in the summary (NO_TRANSCRIPT), else None

    def to_dict(self) -> dict[str, Any]:
        out = {"file": self.file, "reason": self.reason, "track_id": self.track_id}
        return out | ({"code": self.code} if self.code else {})


@dataclass
class ScanResult:
    tracks: list[Track] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    rows_without_audio: int = 0  # metadata rows whose audio is not present (a downloaded subset)


# --------------------------------------------------------------------------- metadata helpers


def empty_meta() -> dict[str, Any]:
    """All AudioCraft music fields, empty (bpm None), plus track_id and transcript."""
    meta: dict[str, Any] = {f: ([] if f in LIST_FIELDS else None if f == "bpm" else "") for f in MUSIC_FIELDS}
    meta["track_id"] = ""
    meta["transcript"] = ""
    return meta


def compose_description(meta: dict[str, Any]) -> str:
    """A caption from what is known: genre, keywords, instruments, moods, bpm, key — deduplicated."""
    parts: list[str] = []

    def add(value: Any) -> None:
        items = value if isinstance(value, list) else re.split(r"\s*,\s*", str(value or ""))
        for item in items:
            item = str(item).strip()
            if item and item.lower() not in (p.lower() for p in parts):
                parts.append(item)

    add(meta.get("genre"))
    add(meta.get("keywords"))
    add(meta.get("instrument"))
    add(meta.get("moods"))
    if meta.get("bpm"):
        parts.append(f"{float(meta['bpm']):g} bpm")
    add(meta.get("key"))
    return ", ".join(parts)


def normalize_meta(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Metadata from a user file → music fields of the right types (lists for moods/keywords,
    float or None for bpm, strings otherwise). ValueError naming ``where`` on a bad value."""
    meta = empty_meta()
    aliases = {"caption": "description", "text": "description", "prompt": "description", "tags": "keywords"}
    aliases.update({"mood": "moods", "instruments": "instrument", "tempo": "bpm", "genres": "keywords"})
    for key, value in raw.items():
        key = aliases.get(key, key)
        if value is None:
            continue
        if key in LIST_FIELDS:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            elif not isinstance(value, list):
                raise ValueError(f"{where}: {key!r} must be a list or a comma-separated string")
            meta[key] = list(dict.fromkeys([*meta[key], *(str(v).strip() for v in value if str(v).strip())]))
        elif key == "bpm":
            try:
                meta["bpm"] = float(value) if value != "" else None
            except (TypeError, ValueError):
                raise ValueError(f"{where}: 'bpm' must be a number, got {value!r}") from None
        elif key in MUSIC_FIELDS or key == "transcript":
            if isinstance(value, (dict, list)):
                value = ", ".join(map(str, value)) if isinstance(value, list) else None
                if value is None:
                    raise ValueError(f"{where}: {key!r} must be text")
            meta[key] = " ".join(str(value).split())
        else:
            meta.setdefault("extra", {})[key] = value
    return meta


def finish_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Fill ``description`` from the other fields when it is empty."""
    if not meta.get("description"):
        meta["description"] = compose_description(meta)
    return meta


def _slug(text: str, limit: int = 40) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return text[:limit] or "track"


def track_key(track: Track) -> str:
    """Output folder name of a track: readable slug + hash of its id (unique, ASCII, stable)."""
    digest = hashlib.sha1(track.track_id.encode("utf-8")).hexdigest()[:10]
    return f"{_slug(track.name)}-{digest}"


# --------------------------------------------------------------------------- detection


def detect_kind(path: Path) -> str:
    """The source kind of a path (see module doc); ``folder`` when nothing more specific fits."""
    if path.is_file():
        if path.name == "tracks.csv" and path.parent.name == "fma_metadata":
            return "fma"
        if path.suffix == ".tsv" and path.name.startswith("autotagging"):
            return "jamendo"
        if path.name == "metadata.csv" and (path.parent / "wavs").is_dir():
            return "ljspeech"
        return "folder"
    if (path / "fma_metadata" / "tracks.csv").is_file() or (
        path.name.startswith("fma_") and (path.parent / "fma_metadata" / "tracks.csv").is_file()
    ):
        return "fma"
    if _jamendo_tsvs(path):
        return "jamendo"
    if (path / "metadata.csv").is_file() and (path / "wavs").is_dir():
        return "ljspeech"
    from tunesmith.data.hf_dataset import is_hf_dataset

    if is_hf_dataset(path):
        return "hf-dataset"
    return "folder"


# --------------------------------------------------------------------------- folder


def _walk_files(root: Path, exclude: Path | None) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        files.extend(here / f for f in sorted(filenames) if not f.startswith("."))
    return files


def _read_sidecars(audio: Path) -> dict[str, Any] | None:
    """Metadata from ``<stem>.json`` and/or ``<stem>.txt`` next to ``audio``; None when neither exists.
    ValueError naming the file when one is unreadable or malformed."""
    json_path, txt_path = audio.with_suffix(".json"), audio.with_suffix(".txt")
    if not json_path.is_file() and not txt_path.is_file():
        return None
    raw: dict[str, Any] = {}
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"unreadable metadata {json_path.name}: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"unreadable metadata {json_path.name}: expected a JSON object, got {type(data).__name__}")
        raw.update(data)
    if txt_path.is_file():
        try:
            caption = " ".join(txt_path.read_text(encoding="utf-8").split())
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"unreadable metadata {txt_path.name}: {err}") from None
        if caption:
            raw["description"] = caption
    return normalize_meta(raw, audio.name)


def _speech_track(file: Path, rel: str, track_id: str, single_file: bool) -> Track | Rejection:
    """A speech clip of a folder source: transcript from ``<stem>.txt`` (required, non-empty), speaker from the
    first folder of ``rel`` (the path under the source) or a ``"speaker"`` in ``<stem>.json``; else a Rejection."""
    txt = file.with_suffix(".txt")
    if not txt.is_file():
        return Rejection(str(file), f"no transcript: {txt.name} is missing (--speech)", track_id, NO_TRANSCRIPT)
    try:
        meta = _read_sidecars(file) or empty_meta()
    except ValueError as err:
        return Rejection(str(file), str(err), track_id)
    transcript = clean_transcript(meta.get("description") or "")
    if not transcript:
        return Rejection(str(file), f"empty transcript: {txt.name} holds no text", track_id, NO_TRANSCRIPT)
    extra = meta.get("extra") or {}
    speaker = extra.pop("speaker", None)
    if speaker is None and not single_file and len(Path(rel).parts) > 1:
        speaker = Path(rel).parts[0]
    if not extra:
        meta.pop("extra", None)
    meta.update(transcript=transcript, description=transcript, genre=meta["genre"] or "speech")
    meta["title"] = meta["title"] or file.stem
    if speaker is not None and clean_transcript(str(speaker)):
        meta["speaker"] = clean_transcript(str(speaker))
    return Track(track_id, "folder", file.stem, str(file.resolve()), meta, whole=True)


def scan_folder(path: Path, exclude: Path | None = None, speech: bool = False) -> ScanResult:
    """Audio files under ``path`` (or ``path`` itself) with sidecar or parent-folder metadata; ``speech``: clips
    with ``.txt`` transcripts and speakers from sub-folders (see the module doc)."""
    result = ScanResult()
    if path.is_file():
        root, files = path.parent, [path]
    else:
        root, files = path, _walk_files(path, exclude)
    audio_stems = {f.with_suffix("") for f in files if f.suffix.lower() in AUDIO_EXTENSIONS}
    for file in files:
        suffix = file.suffix.lower()
        if suffix not in AUDIO_EXTENSIONS:
            if suffix in (".txt", ".json") and file.with_suffix("") in audio_stems:
                continue  # a sidecar
            result.rejected.append(Rejection(str(file), f"not an audio file (extension {suffix or 'none'!r})"))
            continue
        rel = file.relative_to(root).as_posix()
        track_id = f"folder:{root.name}/{rel}"
        if speech:
            found = _speech_track(file, rel, track_id, path.is_file())
            if isinstance(found, Track):
                result.tracks.append(found)
            else:
                result.rejected.append(found)
            continue
        try:
            meta = _read_sidecars(file)
        except ValueError as err:
            result.rejected.append(Rejection(str(file), str(err), track_id))
            continue
        if meta is None:
            meta = empty_meta()
            if file.parent != root or path.is_file():
                meta["genre"] = file.parent.name
        meta["title"] = meta["title"] or file.stem
        result.tracks.append(Track(track_id, "folder", file.stem, str(file.resolve()), finish_meta(meta)))
    return result


# --------------------------------------------------------------------------- FMA


def _read_csv_rows(path: Path) -> tuple[csv.DictReader | Any, Any]:
    try:
        f = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    return csv.reader(f), f


def _fma_genres(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise UserError(f"{path}: missing; FMA needs fma_metadata/genres.csv beside tracks.csv (from fma_metadata.zip)")
    reader, f = _read_csv_rows(path)
    genres: dict[int, str] = {}
    with f:
        try:
            header = next(reader)
        except (StopIteration, UnicodeDecodeError, csv.Error) as err:
            raise UserError(f"{path}: unreadable header ({err})") from None
        if "genre_id" not in header or "title" not in header:
            raise UserError(f"{path}: expected columns genre_id and title, found {header[:6]}")
        gi, ti = header.index("genre_id"), header.index("title")
        try:
            for row in reader:
                if len(row) > max(gi, ti) and row[gi].strip().isdigit():
                    genres[int(row[gi])] = row[ti].strip()
        except (UnicodeDecodeError, csv.Error) as err:
            raise UserError(f"{path}: unreadable at line {reader.line_num} ({err})") from None
    return genres


def _fma_columns(header_rows: list[list[str]]) -> dict[str, int]:
    """Two-level header (top label, field) → ``{"track.title": column}``; blanks forward-filled."""
    top, sub = header_rows[0], header_rows[1]
    columns: dict[str, int] = {}
    last = ""
    for i in range(1, len(sub)):
        label = (top[i] if i < len(top) else "").strip() or last
        last = label
        columns.setdefault(f"{label}.{sub[i].strip()}", i)
    return columns


def _literal_list(text: str, what: str) -> list[Any]:
    text = text.strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"{what} is not a list literal: {text[:60]!r}") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} is not a list: {text[:60]!r}")
    return list(value)


def _fma_layout(path: Path) -> tuple[Path, list[Path]]:
    """(fma_metadata folder, audio folders) for an FMA root or one of its fma_* audio folders."""
    if (path / "fma_metadata" / "tracks.csv").is_file():
        meta_dir = path / "fma_metadata"
        audio_dirs = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith("fma_") and p != meta_dir)
    elif path.name == "fma_metadata" or (path.is_file() and path.name == "tracks.csv"):
        meta_dir = path if path.is_dir() else path.parent
        audio_dirs = sorted(p for p in meta_dir.parent.iterdir() if p.is_dir() and p.name.startswith("fma_"))
        audio_dirs = [p for p in audio_dirs if p != meta_dir]
    else:
        meta_dir, audio_dirs = path.parent / "fma_metadata", [path]
    if not (meta_dir / "tracks.csv").is_file():
        raise UserError(
            f"{path}: no fma_metadata/tracks.csv found; put fma_metadata (from fma_metadata.zip) beside the "
            "fma_small/medium/large/full folder, or use --source folder"
        )
    if not audio_dirs:
        raise UserError(
            f"{meta_dir.parent}: no fma_small/fma_medium/fma_large/fma_full audio folder beside fma_metadata"
        )
    return meta_dir, audio_dirs


def scan_fma(path: Path) -> ScanResult:
    """FMA audio (``fma_*/NNN/NNNNNN.mp3``) with title, artist, genres, top genre and tags."""
    meta_dir, audio_dirs = _fma_layout(path)
    result = ScanResult()
    audio: dict[int, Path] = {}
    for audio_dir in audio_dirs:
        for file in _walk_files(audio_dir, None):
            if file.suffix.lower() not in AUDIO_EXTENSIONS:
                if file.name not in ("README.txt", "checksums"):
                    result.rejected.append(Rejection(str(file), f"not an audio file (extension {file.suffix!r})"))
                continue
            if not file.stem.isdigit():
                result.rejected.append(Rejection(str(file), "not an FMA track file (expected NNNNNN.mp3)"))
                continue
            audio.setdefault(int(file.stem), file)  # fma_small ⊂ medium ⊂ large: first one wins
    genres = _fma_genres(meta_dir / "genres.csv")
    tracks_csv = meta_dir / "tracks.csv"
    reader, f = _read_csv_rows(tracks_csv)
    seen: set[int] = set()
    with f:
        try:
            header_rows = [next(reader), next(reader), next(reader)]
        except (StopIteration, UnicodeDecodeError, csv.Error) as err:
            raise UserError(f"{tracks_csv}: unreadable header ({err}); expected FMA's 3-row header") from None
        cols = _fma_columns(header_rows)
        needed = ("track.title", "artist.name", "track.genre_top", "track.genres", "track.tags")
        missing = [c for c in needed if c not in cols]
        if missing:
            raise UserError(f"{tracks_csv}: missing columns {', '.join(missing)}; is it FMA's tracks.csv?")
        width = len(header_rows[1])
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (UnicodeDecodeError, csv.Error) as err:
                result.rejected.append(Rejection(f"{tracks_csv}:{reader.line_num}", f"unreadable row ({err})"))
                continue
            where = f"{tracks_csv}:{reader.line_num}"
            if not row or not any(cell.strip() for cell in row):
                continue
            if not row[0].strip().isdigit():
                result.rejected.append(Rejection(where, f"malformed row: track_id {row[0][:30]!r} is not a number"))
                continue
            tid = int(row[0])
            file = audio.get(tid)
            if file is None:
                result.rows_without_audio += 1
                continue
            track_id = f"fma:{tid}"
            if len(row) != width:
                result.rejected.append(
                    Rejection(where, f"malformed row: {len(row)} fields, expected {width}", track_id)
                )
                seen.add(tid)
                continue
            try:
                genre_ids = [int(g) for g in _literal_list(row[cols["track.genres"]], "track.genres")]
                tags = [str(t) for t in _literal_list(row[cols["track.tags"]], "track.tags")]
            except (ValueError, TypeError) as err:
                result.rejected.append(Rejection(where, f"malformed row: {err}", track_id))
                seen.add(tid)
                continue
            seen.add(tid)
            meta = empty_meta()
            meta["title"] = row[cols["track.title"]].strip()
            meta["artist"] = row[cols["artist.name"]].strip()
            top = row[cols["track.genre_top"]].strip()
            sub = [genres[g] for g in genre_ids if g in genres and genres[g] != top]
            meta["genre"] = top or (sub[0] if sub else "")
            meta["keywords"] = list(dict.fromkeys(sub + tags))
            result.tracks.append(Track(track_id, "fma", f"fma_{tid:06d}", str(file.resolve()), finish_meta(meta)))
    for tid, file in sorted(audio.items()):
        if tid not in seen:
            result.rejected.append(Rejection(str(file), f"no row for track {tid} in {tracks_csv}", f"fma:{tid}"))
    return result


# --------------------------------------------------------------------------- MTG-Jamendo


def _jamendo_tsvs(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".tsv" else []
    if not path.is_dir():
        return []
    return sorted(path.glob("autotagging*.tsv")) or sorted((path / "data").glob("autotagging*.tsv"))


def scan_jamendo(path: Path) -> ScanResult:
    """MTG-Jamendo: tags from every ``autotagging*.tsv`` merged per track; audio at ``PATH`` under
    the folder (or its ``audio/`` subfolder; ``.low.mp3`` variants accepted)."""
    tsvs = _jamendo_tsvs(path)
    if not tsvs:
        raise UserError(f"{path}: no autotagging*.tsv found (MTG-Jamendo metadata); or use --source folder")
    base = path if path.is_dir() else path.parent
    roots = [base, base / "audio", base.parent, base.parent / "audio"]
    result = ScanResult()
    rows: dict[str, dict[str, Any]] = {}
    for tsv in tsvs:
        try:
            lines = tsv.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{tsv}: unreadable ({err})") from None
        if not lines or not lines[0].startswith("TRACK_ID"):
            raise UserError(f"{tsv}: expected a header starting with TRACK_ID (MTG-Jamendo autotagging tsv)")
        header = lines[0].split("\t")
        if "PATH" not in header or "TAGS" not in header:
            raise UserError(f"{tsv}: header must have PATH and TAGS columns, found {header}")
        pi, ti = header.index("PATH"), header.index("TAGS")
        for number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            cells = line.split("\t")
            where = f"{tsv}:{number}"
            if len(cells) <= pi or not cells[0].startswith("track_") or not cells[pi].strip():
                result.rejected.append(Rejection(where, "malformed row: expected TRACK_ID, ..., PATH, ..., TAGS"))
                continue
            row = rows.setdefault(cells[0], {"path": cells[pi].strip(), "tags": [], "where": where})
            for tag in cells[ti:]:
                tag = tag.strip()
                if not tag:
                    continue
                if "---" not in tag:
                    row["bad"] = f"{where}: malformed tag {tag[:40]!r} (expected category---value)"
                    continue
                if tag not in row["tags"]:
                    row["tags"].append(tag)
    referenced: set[Path] = set()
    for tid, row in sorted(rows.items()):
        rel = Path(row["path"])
        candidates = [r / rel for r in roots] + [r / rel.with_name(rel.stem + ".low" + rel.suffix) for r in roots]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            result.rows_without_audio += 1
            continue
        referenced.add(file.resolve())
        track_id = f"jamendo:{tid}"
        if "bad" in row:
            result.rejected.append(Rejection(str(file), row["bad"], track_id))
            continue
        meta = empty_meta()
        by_cat: dict[str, list[str]] = {}
        for tag in row["tags"]:
            cat, value = tag.split("---", 1)
            by_cat.setdefault(cat, []).append(value.strip())
        genres = by_cat.get("genre", [])
        meta["genre"] = genres[0] if genres else ""
        meta["instrument"] = ", ".join(by_cat.get("instrument", []))
        meta["moods"] = by_cat.get("mood/theme", [])
        meta["keywords"] = genres[1:]
        result.tracks.append(Track(track_id, "jamendo", tid, str(file.resolve()), finish_meta(meta)))
    if path.is_dir():
        for file in _walk_files(base, None):
            if file.suffix.lower() in AUDIO_EXTENSIONS and file.resolve() not in referenced:
                result.rejected.append(Rejection(str(file), "no row for this file in the autotagging tsv files"))
    return result


# --------------------------------------------------------------------------- LJSpeech


def scan_ljspeech(path: Path) -> ScanResult:
    """LJSpeech layout: ``metadata.csv`` rows ``id|text|normalized_text[|speaker]`` and ``wavs/<id>.wav``;
    the transcript (normalized text when present, NFC) is the description; utterances are not cut. A row
    without text and a wav without a row are rejected with code ``no_transcript``."""
    base = path.parent if path.is_file() else path
    meta_path = base / "metadata.csv"
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: missing; an LJSpeech dataset has metadata.csv (id|text|normalized_text)")
    try:
        lines = meta_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{meta_path}: unreadable ({err})") from None
    result = ScanResult()
    wav_dir = base / "wavs"
    used: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{meta_path}:{number}"
        cells = line.split("|")
        if len(cells) < 2 or not cells[0].strip():
            result.rejected.append(Rejection(where, "malformed row: expected id|text|normalized_text"))
            continue
        uid = cells[0].strip()
        text = clean_transcript(cells[2] if len(cells) > 2 and cells[2].strip() else cells[1])
        speaker = clean_transcript(cells[3]) if len(cells) > 3 else ""
        file = wav_dir / f"{uid}.wav"
        if not text:
            used.add(file.name)
            reason = "empty transcript: the row has no text (expected id|text|normalized_text)"
            result.rejected.append(Rejection(where, reason, f"ljspeech:{uid}", NO_TRANSCRIPT))
            continue
        if not file.is_file():
            result.rejected.append(Rejection(where, f"audio file not found: {file}", f"ljspeech:{uid}"))
            continue
        used.add(file.name)
        meta = empty_meta()
        meta.update(transcript=text, description=text, genre="speech", name=uid)
        if speaker:
            meta["speaker"] = speaker
        result.tracks.append(Track(f"ljspeech:{uid}", "ljspeech", uid, str(file.resolve()), meta, whole=True))
    if wav_dir.is_dir():
        for file in _walk_files(wav_dir, None):
            if file.name not in used and file.suffix.lower() in AUDIO_EXTENSIONS:
                reason = f"no transcript: no row for {file.stem} in {meta_path}"
                result.rejected.append(Rejection(str(file), reason, code=NO_TRANSCRIPT))
    return result


# --------------------------------------------------------------------------- synthetic


def scan_synthetic(num_tracks: int, track_duration: float, seed: int, valid_fraction: float) -> ScanResult:
    """``num_tracks`` generated tracks. Their split is stratified by index (an exact share, stable
    when tracks are added) instead of hashed, so even a handful of tracks has a valid split."""
    from tunesmith.data.synthetic import track_metadata, track_params

    result = ScanResult()
    offset = int(hashlib.sha1(f"synthetic-split:{seed}".encode()).hexdigest()[:8], 16) / 2**32
    for i in range(num_tracks):
        params = track_params(i, seed, track_duration)
        meta = empty_meta()
        meta.update(track_metadata(params))
        valid = int((i + 1) * valid_fraction + offset) > int(i * valid_fraction + offset)
        track = Track(f"synthetic:{seed}:{i}", "synthetic", meta["name"], None, meta, synth=params)
        track.split_hint = 0.0 if valid else 1.0
        result.tracks.append(track)
    return result


def scan_source(
    path: Path, kind: str, exclude: Path | None = None, options: dict[str, Any] | None = None, speech: bool = False
) -> ScanResult:
    """Dispatch to the scanner of ``kind`` (``auto`` detects it); ``options``: the hf-dataset columns;
    ``speech``: a folder source holds transcribed speech (UserError for kinds other than folder and ljspeech)."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if kind == "auto":
        kind = detect_kind(path)
    if speech and kind not in ("folder", "ljspeech"):
        raise UserError(f"{path}: --speech is for folder sources (ljspeech is always speech); this is a {kind} source")
    if kind == "folder":
        return scan_folder(path, exclude, speech)
    if kind == "fma":
        return scan_fma(path)
    if kind == "jamendo":
        return scan_jamendo(path)
    if kind == "ljspeech":
        return scan_ljspeech(path)
    if kind == "hf-dataset":
        from tunesmith.data.hf_dataset import scan_hf_dataset

        return scan_hf_dataset(path, options)
    raise UserError(f"unknown --source {kind!r}; choose one of auto, {', '.join(KINDS)}")
