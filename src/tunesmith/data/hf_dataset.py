"""``--source hf-dataset``: a Hugging Face ``datasets`` dataset on disk, read with pyarrow, row batch by row batch.

Layouts: a folder written by ``Dataset.save_to_disk`` (``state.json`` + ``data-*.arrow``), by
``DatasetDict.save_to_disk`` (``dataset_dict.json`` + one such folder per split), or a folder of parquet
files (``<split>-00000-of-00001.parquet`` as on the Hub, or ``<split>/*.parquet``, or any ``*.parquet``).

Columns: the audio column (``--audio-column``, default the column named "audio", else the first
``struct<bytes, path>`` column) holds encoded audio bytes (decoded from a temporary file by the worker that
prepares the track) or paths (relative to the dataset folder, or absolute); a plain string column of paths
works too. The text column (``--text-column``, default the first of text, caption, description, prompt;
several, comma-separated, are joined with ". ") becomes the description; ``--columns genre=style,moods=tags``
maps music fields to columns; other scalar columns are kept under the sidecar's ``extra`` (usable by
``--include col=...``).

Splits are kept: rows of a split named train go to train, of validation/valid/dev/test to valid (when
``--valid-fraction`` is above 0); a dataset with one split is split by track as usual.

Memory stays flat: arrow files are memory-mapped and parquet files read in batches of rows; a track keeps only
where its bytes are (file, batch, row), and the worker reads that one value back.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.sources import Rejection, ScanResult, Track, finish_meta, normalize_meta
from tunesmith.errors import UserError

TEXT_COLUMNS = ("text", "caption", "description", "prompt")
VALID_SPLITS = frozenset({"validation", "valid", "val", "dev", "test", "eval"})
BATCH_ROWS = 64
_SHARD = re.compile(r"^(?P<split>[A-Za-z][\w.]*?)-\d{5}-of-\d{5}\.parquet$")


@dataclass(frozen=True)
class HfOptions:
    """What to read: ``audio_column`` / ``text_column`` (None: found), ``columns``: music field → column."""

    audio_column: str | None = None
    text_column: str | None = None
    columns: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> HfOptions:
        options = options or {}
        return cls(options.get("audio_column"), options.get("text_column"), tuple(options.get("columns") or ()))


def parse_column_map(items: list[str] | None) -> list[tuple[str, str]]:
    """``["genre=style", "moods=tags,artist=singer"]`` → ``[("genre", "style"), ...]``; UserError when malformed."""
    pairs: list[tuple[str, str]] = []
    for item in items or []:
        for piece in item.split(","):
            field, sep, column = piece.partition("=")
            if not sep or not field.strip() or not column.strip():
                raise UserError(f"--columns {item!r}: expected FIELD=COLUMN pairs, e.g. genre=style")
            pairs.append((field.strip(), column.strip()))
    return pairs


def is_hf_dataset(path: Path) -> bool:
    """Whether ``path`` looks like one of the layouts in the module doc."""
    if not path.is_dir():
        return False
    if (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file() and any(path.glob("*.arrow"))):
        return True
    return any(path.glob("*.parquet")) or any(path.glob("*/*.parquet"))


@dataclass(frozen=True)
class _Shard:
    split: str
    file: Path
    format: str  # arrow | parquet


def _shards(root: Path) -> list[_Shard]:
    if (root / "dataset_dict.json").is_file():
        try:
            splits = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{root}/dataset_dict.json: unreadable ({err})") from None
        return [s for split in splits for s in _arrow_shards(root / split, split)]
    if (root / "state.json").is_file():
        return _arrow_shards(root, None)
    files = sorted(root.glob("*.parquet")) + sorted(root.glob("*/*.parquet"))
    if not files:
        raise UserError(f"{root}: no dataset found (dataset_dict.json, state.json + *.arrow, or *.parquet files)")
    shards = []
    for file in files:
        match = _SHARD.match(file.name)
        split = file.parent.name if file.parent != root else (match.group("split") if match else "train")
        shards.append(_Shard(split, file, "parquet"))
    return shards


def _arrow_shards(folder: Path, split: str | None) -> list[_Shard]:
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{folder}/state.json: unreadable ({err}); is it a folder written by save_to_disk?") from None
    split = split or state.get("_split") or "train"
    return [_Shard(str(split), folder / name, "arrow") for name in names]


def _batches(shard: _Shard, columns: list[str] | None = None) -> Iterator[Any]:
    """Record batches of a shard (arrow: memory-mapped, zero-copy; parquet: BATCH_ROWS rows at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if shard.format == "arrow":
            with pa.memory_map(str(shard.file)) as source:
                reader = pa.ipc.open_stream(source)
                for batch in reader:
                    yield batch.select(columns) if columns else batch
        else:
            for batch in pq.ParquetFile(shard.file).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield batch
    except (OSError, pa.ArrowInvalid) as err:
        raise UserError(f"{shard.file}: unreadable ({err})") from None


def _schema(shard: _Shard) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if shard.format == "arrow":
            with pa.memory_map(str(shard.file)) as source:
                return pa.ipc.open_stream(source).schema
        return pq.ParquetFile(shard.file).schema_arrow
    except (OSError, pa.ArrowInvalid) as err:
        raise UserError(f"{shard.file}: unreadable ({err})") from None


def _audio_column(schema: Any, wanted: str | None, where: Path) -> tuple[str, str]:
    """(column name, "struct" | "path")."""
    import pyarrow as pa

    def kind(name: str) -> str | None:
        t = schema.field(name).type
        if pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} >= {"bytes", "path"}:
            return "struct"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "path"
        return None

    names = schema.names
    if wanted is not None:
        if wanted not in names:
            raise UserError(f"{where}: no column {wanted!r} for --audio-column; columns: {', '.join(names)}")
        k = kind(wanted)
        if k is None:
            raise UserError(f"{where}: --audio-column {wanted!r} holds {schema.field(wanted).type}, not audio or paths")
        return wanted, k
    if "audio" in names and kind("audio"):
        return "audio", str(kind("audio"))
    for name in names:
        if kind(name) == "struct":
            return name, "struct"
    raise UserError(f"{where}: no audio column (struct<bytes, path>) found; name one with --audio-column")


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return list(value)
    return None


def scan_hf_dataset(path: Path, options: dict[str, Any] | None = None) -> ScanResult:
    """Tracks of every row of every split (see module doc); rows without audio are rejected."""
    opts = HfOptions.from_dict(options)
    root = path if path.is_dir() else path.parent
    shards = _shards(root)
    splits = sorted({s.split for s in shards})
    keep_splits = len(splits) > 1
    result = ScanResult()
    for shard in shards:
        schema = _schema(shard)
        audio_col, audio_kind = _audio_column(schema, opts.audio_column, shard.file)
        if opts.text_column:
            text_cols = [c.strip() for c in opts.text_column.split(",") if c.strip()]
            for c in text_cols:
                if c not in schema.names:
                    raise UserError(f"{shard.file}: no column {c!r} for --text-column; columns: {schema.names}")
        else:
            text_cols = [c for c in TEXT_COLUMNS if c in schema.names][:1]
        for field, column in opts.columns:
            if column not in schema.names:
                raise UserError(f"{shard.file}: no column {column!r} for --columns {field}={column}")
        others = [c for c in schema.names if c != audio_col and c not in text_cols]
        row = 0
        for batch_index, batch in enumerate(_batches(shard)):
            audio = batch.column(audio_col)
            if audio_kind == "struct":
                paths = audio.field("path").to_pylist()
                has_bytes = audio.field("bytes").is_valid().to_pylist()
            else:
                paths, has_bytes = audio.to_pylist(), [False] * batch.num_rows
            columns = [batch.column(c).to_pylist() for c in text_cols]
            texts = (
                [
                    ". ".join(str(v).strip() for v in values if v is not None and str(v).strip())
                    for values in zip(*columns, strict=True)
                ]
                if columns
                else [None] * batch.num_rows
            )
            extras = {c: batch.column(c).to_pylist() for c in others}
            for i in range(batch.num_rows):
                result_track = _row_track(
                    root,
                    shard,
                    audio_col,
                    row,
                    batch_index,
                    i,
                    paths[i],
                    has_bytes[i],
                    texts[i],
                    extras,
                    opts,
                    keep_splits,
                )
                if isinstance(result_track, Rejection):
                    result.rejected.append(result_track)
                else:
                    result.tracks.append(result_track)
                row += 1
            del audio, batch  # only the metadata is kept
    return result


def _row_track(
    root: Path,
    shard: _Shard,
    audio_column: str,
    row: int,
    batch_index: int,
    index: int,
    audio_path: str | None,
    has_bytes: bool,
    text: Any,
    extras: dict[str, list[Any]],
    opts: HfOptions,
    keep_splits: bool,
) -> Track | Rejection:
    where = f"{shard.file}:{shard.split}[{row}]"
    key = f"{shard.split}/{audio_path}" if audio_path else f"{shard.split}/{shard.file.name}#{row}"
    track_id = f"hf:{root.name}/{key}"
    raw: dict[str, Any] = {}
    if text is not None and str(text).strip():
        raw["description"] = str(text)
    mapped = {column for _, column in opts.columns}
    for field, column in opts.columns:
        value = _scalar(extras[column][index])
        if value is not None:
            raw[field] = value
    try:
        meta = normalize_meta(raw, where)
    except ValueError as err:
        return Rejection(where, str(err), track_id)
    extra = meta.setdefault("extra", {})
    for column, values in extras.items():
        if column not in mapped and (value := _scalar(values[index])) is not None:
            extra[column] = value
    extra["split"] = shard.split
    name = Path(audio_path).stem if audio_path else f"{shard.split}_{row:06d}"
    meta["title"] = meta["title"] or name
    meta = finish_meta(meta)
    if has_bytes:
        blob = {
            "file": str(shard.file),
            "format": shard.format,
            "column": audio_column,
            "row_index": row,
            "batch": batch_index,
            "row": index,
        }
        blob["suffix"] = Path(audio_path).suffix if audio_path else ""
        track = Track(track_id, "hf-dataset", name, None, meta, blob=blob)
        extra["_rel"] = f"{shard.split}/{audio_path or row}"
    elif audio_path:
        file = Path(audio_path) if os.path.isabs(audio_path) else root / audio_path
        if not file.is_file():
            return Rejection(where, f"audio file not found: {file}", track_id)
        track = Track(track_id, "hf-dataset", name, str(file.resolve()), meta)
    else:
        return Rejection(where, "no audio: the audio column holds neither bytes nor a path", track_id)
    if keep_splits:
        track.split_hint = 0.0 if shard.split.lower() in VALID_SPLITS else 1.0
    return track


def _sniff_suffix(data: bytes) -> str:
    if data[:4] == b"RIFF":
        return ".wav"
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:4] == b"OggS":
        return ".ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return ".mp3"
    return ".bin"


def read_blob(blob: dict[str, Any]) -> bytes:
    """The audio bytes a track's ``blob`` points at (one value read back from its arrow or parquet file)."""
    import pyarrow as pa

    file = Path(blob["file"])
    if blob["format"] == "arrow":  # memory-mapped: walking to the batch reads headers only
        with pa.memory_map(str(file)) as source:
            for k, batch in enumerate(pa.ipc.open_stream(source)):
                if k == blob["batch"]:
                    return _audio_bytes(batch, blob["column"], blob["row"])
    else:
        value = _parquet_value(file, blob["column"], blob["row_index"])
        if value is not None:
            return value
    raise UserError(f"{file}: row {blob['row']} of batch {blob['batch']} is gone (the dataset changed?)")


# where this process last read a parquet file: tracks are prepared in order, so continuing from here reads each
# row group once instead of from its start for every track (one batch of BATCH_ROWS rows is held)
_CURSOR: dict[str, Any] = {}


def _parquet_value(file: Path, column: str, row_index: int) -> bytes | None:
    import pyarrow.parquet as pq

    key = (str(file), file.stat().st_mtime_ns, column)
    cursor = _CURSOR
    if cursor.get("key") != key or row_index < cursor["start"]:
        pf = pq.ParquetFile(file)
        meta, first, start = pf.metadata, 0, 0
        for first in range(meta.num_row_groups):
            if row_index < start + meta.row_group(first).num_rows:
                break
            start += meta.row_group(first).num_rows
        else:
            return None
        groups = list(range(first, meta.num_row_groups))
        batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=groups, columns=[column])
        cursor.clear()
        cursor.update(key=key, batches=batches, batch=None, start=start, end=start)
    while row_index >= cursor["end"]:
        batch = next(cursor["batches"], None)
        if batch is None:
            cursor.clear()
            return None
        cursor.update(batch=batch, start=cursor["end"], end=cursor["end"] + batch.num_rows)
    return _audio_bytes(cursor["batch"], column, row_index - cursor["start"])


def _audio_bytes(batch: Any, column: str, row: int) -> bytes:
    value = batch.column(column).field("bytes")[row].as_py()
    if not value:
        raise UserError(f"the audio bytes of column {column!r} are empty in this row")
    return value


@contextmanager
def blob_file(blob: dict[str, Any], folder: Path) -> Iterator[str]:
    """A temporary file in ``folder`` holding a blob's audio bytes (suffix from its name or its content)."""
    data = read_blob(blob)
    suffix = blob.get("suffix") or _sniff_suffix(data)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".hf-audio-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        del data
        yield name
    finally:
        Path(name).unlink(missing_ok=True)
