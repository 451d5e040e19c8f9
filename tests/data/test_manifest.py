"""tunesmith.data.manifest: reading AudioCraft manifests, path resolution, sidecars, dataset.json."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from tunesmith.data.manifest import (
    MUSIC_FIELDS,
    ManifestEntry,
    manifest_path,
    read_dataset_json,
    read_info,
    read_manifest,
    resolve_path,
    write_manifest,
)
from tunesmith.data.prepare import prepare_dataset
from tunesmith.errors import UserError


def _write_lines(ds, split, lines):
    path = manifest_path(ds, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_read_manifest_fields_and_blank_lines(tmp_path):
    _write_lines(
        tmp_path,
        "train",
        [
            json.dumps({"path": "/abs/a.wav", "duration": 10.0, "sample_rate": 32000, "amplitude": 0.5, "weight": 1}),
            "",
            json.dumps({"path": "rel/b.wav", "duration": 5, "sample_rate": 32000, "info_path": None, "extra": 1}),
        ],
    )
    entries = read_manifest(tmp_path, "train")
    assert entries == [
        ManifestEntry("/abs/a.wav", 10.0, 32000, 0.5, 1.0, None),
        ManifestEntry("rel/b.wav", 5.0, 32000, None, None, None),
    ]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"path": "a.wav", "duration": 1.0', "not valid JSON"),
        ('{"duration": 1.0, "sample_rate": 16000}', "missing field"),
        ('{"path": "a.wav", "duration": "long", "sample_rate": 16000}', "bad number"),
        ('{"path": "a.wav", "duration": -1, "sample_rate": 16000}', "positive number of seconds"),
        ('{"path": "a.wav", "duration": 1, "sample_rate": 0}', "positive integer"),
        ('["a.wav", 1, 16000]', "expected a JSON object"),
    ],
)
def test_broken_line_names_file_and_line(tmp_path, line, match):
    good = json.dumps({"path": "a.wav", "duration": 1.0, "sample_rate": 16000})
    path = _write_lines(tmp_path, "valid", [good, good, line])
    with pytest.raises(UserError, match=match) as err:
        read_manifest(tmp_path, "valid")
    assert f"{path}:3" in str(err.value)


def test_missing_manifest_says_what_exists(tmp_path):
    _write_lines(tmp_path, "train", [json.dumps({"path": "a.wav", "duration": 1.0, "sample_rate": 16000})])
    with pytest.raises(UserError, match="this dataset has: train"):
        read_manifest(tmp_path, "valid")
    with pytest.raises(UserError, match="tunesmith prepare"):
        read_manifest(tmp_path / "nothing", "train")


def test_gzipped_manifest(tmp_path):
    path = manifest_path(tmp_path, "train").with_suffix(".jsonl.gz")
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"path": "a.wav", "duration": 2.0, "sample_rate": 8000}) + "\n")
    assert read_manifest(tmp_path, "train")[0].duration == 2.0


def test_write_manifest_roundtrip_and_unchanged(tmp_path):
    entries = [ManifestEntry(str(tmp_path / "ü ñ.wav"), 1.5, 16000, 0.25, 1.0)]
    path = manifest_path(tmp_path, "train")
    assert write_manifest(path, entries) is True
    assert write_manifest(path, entries) is False
    assert read_manifest(tmp_path, "train") == entries


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "data"
    prepare_dataset(
        [], out, source="synthetic", num_tracks=4, track_duration=2.0, sample_rate=8000, segment=1.0,
        valid_fraction=0.25, progress=False,
    )  # fmt: skip
    return out


def test_paths_are_absolute_and_sidecars_complete(small_dataset):
    for split in ("train", "valid"):
        entries = read_manifest(small_dataset, split)
        assert entries
        for entry in entries:
            assert entry.path.startswith("/") and entry.info_path is None
            assert resolve_path(small_dataset, entry).is_file()
            info = read_info(small_dataset, entry)
            raw = json.loads(resolve_path(small_dataset, entry).with_suffix(".json").read_text())
            assert set(MUSIC_FIELDS) | {"track_id", "transcript"} <= set(raw)  # written, not just defaulted
            assert info["description"] and info["track_id"].startswith("synthetic:")


def test_relative_paths_resolve_from_dataset_dir(small_dataset, tmp_path):
    entry = read_manifest(small_dataset, "train")[0]
    rel = resolve_path(small_dataset, entry).relative_to(small_dataset)
    relative = ManifestEntry(str(rel), entry.duration, entry.sample_rate)
    assert resolve_path(small_dataset, relative) == small_dataset / rel
    assert read_info(small_dataset, relative)["track_id"] == read_info(small_dataset, entry)["track_id"]


def test_moved_dataset_still_resolves(small_dataset, tmp_path):
    moved = tmp_path / "moved here"
    shutil.copytree(small_dataset, moved)
    for entry in read_manifest(moved, "train"):
        path = resolve_path(moved, entry)
        assert path.is_file() and moved in path.parents
        assert read_info(moved, entry)["description"]


def test_read_info_errors(small_dataset, tmp_path):
    missing = ManifestEntry(str(tmp_path / "gone.wav"), 1.0, 8000)
    with pytest.raises(UserError, match="missing sidecar"):
        read_info(small_dataset, missing)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="must be a JSON object"):
        read_info(tmp_path, ManifestEntry("bad.wav", 1.0, 8000))


def test_read_dataset_json(small_dataset, tmp_path):
    data = read_dataset_json(small_dataset)
    assert data["sample_rate"] == 8000 and data["counts"]["tracks"]["total"] == 4
    with pytest.raises(UserError, match="not found"):
        read_dataset_json(tmp_path)
    (tmp_path / "dataset.json").write_text("{oops")
    with pytest.raises(UserError, match="unreadable"):
        read_dataset_json(tmp_path)


def test_spread_indices_are_even_stable_and_bounded() -> None:
    from tunesmith.data.manifest import spread_indices

    assert spread_indices(10, 3) == [0, 4, 9]  # linspace 0, 4.5, 9; half to even
    assert spread_indices(3, 10) == [0, 1, 2]  # never more than there are
    assert spread_indices(5, 1) == [0] and spread_indices(0, 4) == []
