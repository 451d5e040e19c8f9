"""`prepare --source hf-dataset`: datasets written by `datasets` itself (save_to_disk and parquet), audio as bytes
and as paths, text and attribute columns, splits kept; the decoded audio equals the original."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunesmith.cli import main
from tunesmith.data.prepare import prepare_dataset
from tunesmith.data.synthetic import render_track, track_params
from tunesmith.errors import UserError

SR = 16000
GENRES = ["Rock", "Jazz", "Rock", "Ambient", "Jazz", "Rock"]


def _clip(i: int) -> np.ndarray:
    return render_track(track_params(i, 0, 1.0), SR, 1)[0]


def _wav_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _clip(i), SR, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _dataset(rows: list[dict], audio_kind: str):
    import datasets

    audio = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    features = datasets.Features(
        {
            "audio": audio,
            "caption": datasets.Value("string"),
            "style": datasets.Value("string"),
            "bpm": datasets.Value("int32"),
        }
    )
    ds = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)
    return ds.cast_column("audio", datasets.Audio()) if audio_kind == "struct" else ds


def _rows(indices: list[int], *, paths: Path | None = None) -> list[dict]:
    rows = []
    for i in indices:
        if paths is None:
            audio = {"bytes": _wav_bytes(i), "path": f"clip{i}.wav"}
        else:
            file = paths / f"clip{i}.wav"
            sf.write(file, _clip(i), SR, subtype="FLOAT")
            audio = {"bytes": None, "path": file.name}
        rows.append({"audio": audio, "caption": f"piece number {i}", "style": GENRES[i], "bpm": 90 + i})
    return rows


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The same rows (train 0-3, test 4-5) in four layouts: save_to_disk (a DatasetDict) and parquet files
    (``<split>-00000-of-00001.parquet``), each with the audio as encoded bytes and as paths to wav files."""
    import datasets

    root = tmp_path_factory.mktemp("hf")
    here = os.getcwd()
    for layout in ("disk-bytes", "disk-paths", "parquet-bytes", "parquet-paths"):
        folder = root / layout
        folder.mkdir()
        paths = folder if layout.endswith("paths") else None
        os.chdir(folder)  # `datasets` sizes path-only audio relative to the working folder
        try:
            train = _dataset(_rows([0, 1, 2, 3], paths=paths), "struct")
            test = _dataset(_rows([4, 5], paths=paths), "struct")
            if layout.startswith("disk"):
                datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder / "ds"))
            else:
                (folder / "ds").mkdir()
                train.to_parquet(str(folder / "ds" / "train-00000-of-00001.parquet"))
                test.to_parquet(str(folder / "ds" / "test-00000-of-00001.parquet"))
        finally:
            os.chdir(here)
        if paths is not None:  # paths in the rows are relative to the dataset folder
            for wav in folder.glob("*.wav"):
                wav.rename(folder / "ds" / wav.name)
    return root


def _segments(out: Path) -> dict[str, tuple[dict, str]]:
    got = {}
    for split in ("train", "valid"):
        for line in (out / "egs" / split / "data.jsonl").read_text().splitlines():
            seg = json.loads(line)
            side = json.loads((out / Path(seg["path"]).with_suffix(".json")).read_text())
            got[side["title"]] = (side, split, out / seg["path"])
    return got


@pytest.mark.parametrize("layout", ["disk-bytes", "disk-paths", "parquet-bytes", "parquet-paths"])
def test_hf_dataset_bytes_and_paths(saved, tmp_path, layout):
    out = tmp_path / "out"
    argv = [
        "prepare",
        str(saved / layout / "ds"),
        "--out",
        str(out),
        "--source",
        "hf-dataset",
        "--sample-rate",
        str(SR),
    ]
    argv += ["--segment", "1", "--min-segment", "0.5", "--text-column", "caption", "--columns", "genre=style"]
    argv += ["--no-progress", "--json"]
    assert main(argv) == 0
    got = _segments(out)
    assert sorted(got) == [f"clip{i}" for i in range(6)]
    for i in range(6):
        side, split, path = got[f"clip{i}"]
        assert side["description"] == f"piece number {i}"
        assert side["genre"] == GENRES[i] and side["extra"]["bpm"] == 90 + i
        assert split == ("train" if i < 4 else "valid")  # the dataset's own splits are kept
        wav, sr = sf.read(path, dtype="float32")
        ref = _clip(i)
        assert sr == SR and wav.shape == ref.shape
        assert np.max(np.abs(wav - ref)) < 1e-3  # the same audio (16-bit wav output)
    assert not list((out / "state").rglob(".hf-audio-*"))  # temporary files are gone
    again = prepare_dataset(
        [saved / layout / "ds"],
        out,
        source="hf-dataset",
        sample_rate=SR,
        segment=1.0,
        min_segment=0.5,
        progress=False,
        hf_options={"text_column": "caption", "columns": [("genre", "style")]},
    )
    assert again["run"]["processed"] == 0 and again["run"]["skipped_already_done"] == 6  # resumable


def test_hf_dataset_filters_subset_and_auto_detection(saved, tmp_path):
    summary = prepare_dataset(
        [saved / "disk-bytes" / "ds"],
        tmp_path / "out",
        sample_rate=SR,
        segment=1.0,
        min_segment=0.5,
        progress=False,
        include=["style=rock", "split=train"],
        hf_options={"text_column": "caption"},
    )  # auto-detects hf-dataset; style is an extra column
    assert sorted(_segments(tmp_path / "out")) == ["clip0", "clip2"]
    two = prepare_dataset(
        [saved / "parquet-bytes" / "ds"],
        tmp_path / "two",
        sample_rate=SR,
        segment=1.0,
        min_segment=0.5,
        progress=False,
        include=["bpm=91"],
        hf_options={"text_column": "caption,style"},
    )
    assert two["counts"]["tracks"]["total"] == 1
    assert _segments(tmp_path / "two")["clip1"][0]["description"] == "piece number 1. Jazz"
    assert summary["run"]["not_chosen"] == 4
    sub = prepare_dataset(
        [saved / "parquet-paths" / "ds"],
        tmp_path / "sub",
        sample_rate=SR,
        segment=1.0,
        min_segment=0.5,
        progress=False,
        max_tracks=2,
        seed=5,
    )
    assert sub["counts"]["tracks"]["total"] == 2


def test_hf_dataset_bad_columns_are_user_errors(saved, tmp_path):
    with pytest.raises(UserError, match="--text-column"):
        prepare_dataset(
            [saved / "disk-bytes" / "ds"],
            tmp_path / "a",
            source="hf-dataset",
            progress=False,
            hf_options={"text_column": "nope"},
        )
    with pytest.raises(UserError, match="audio-column"):
        prepare_dataset(
            [saved / "disk-bytes" / "ds"],
            tmp_path / "b",
            source="hf-dataset",
            progress=False,
            hf_options={"audio_column": "bpm"},
        )


def test_hf_dataset_scan_memory_is_flat(tmp_path):
    """Scanning keeps no audio bytes: Python's peak while scanning 60 rows of 64 KB stays far below their 3.8 MB,
    and arrow holds none of them afterwards."""
    import tracemalloc

    import pyarrow as pa

    from tunesmith.data.hf_dataset import scan_hf_dataset

    big = bytes(64 << 10)
    rows = [
        {"audio": {"bytes": big, "path": f"c{i}.wav"}, "caption": "x", "style": "Rock", "bpm": 1} for i in range(60)
    ]
    _dataset(rows, "struct").to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    del rows
    tracemalloc.start()
    result = scan_hf_dataset(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(result.tracks) == 60
    assert peak < 20 * len(big)
    assert pa.total_allocated_bytes() < 20 * len(big)
    assert all(t.audio is None and t.blob["column"] == "audio" for t in result.tracks)


def test_blob_reads_across_row_groups_in_any_order(tmp_path):
    """Parquet files with several row groups (10 rows) and batches (64 rows) that do not line up: every track's
    bytes come back exactly, read in order (one pass) or backwards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunesmith.data.hf_dataset import read_blob, scan_hf_dataset

    values = [f"RIFF-{i:03d}".encode() * (i + 1) for i in range(135)]
    audio = pa.array([{"bytes": v, "path": f"r{i}.wav"} for i, v in enumerate(values)])
    table = pa.table({"audio": audio, "text": [f"t{i}" for i in range(135)]})
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet", row_group_size=10)
    assert pq.ParquetFile(tmp_path / "train-00000-of-00001.parquet").metadata.num_row_groups == 14
    tracks = scan_hf_dataset(tmp_path).tracks
    assert [t.name for t in tracks] == [f"r{i}" for i in range(135)]
    assert [read_blob(t.blob) for t in tracks] == values
    assert [read_blob(t.blob) for t in reversed(tracks)] == values[::-1]
