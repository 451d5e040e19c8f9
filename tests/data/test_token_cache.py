"""Token cache: codes equal direct encoding, fast crops, resume after a kill, stale caches, bad files, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.audio.io import load_audio
from tunesmith.data.manifest import read_info, read_manifest, resolve_path
from tunesmith.data.token_cache import SplitStats, TokenShards, ensure_token_cache
from tunesmith.errors import UserError
from tunesmith.models.codec import build_codec_model, codec_fingerprint

CODEC = {"sample_rate": 8000, "dimension": 8, "n_filters": 4, "ratios": [4, 2], "lstm": 1, "n_q": 3, "bins": 64}


def _save_codec(folder: Path, seed: int = 0, **overrides) -> Path:
    from tunesmith.artifacts.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = build_codec_model({**CODEC, **overrides})
    config = {"meta": {"task": "codec"}, "config": {"model": model.config_dict()}}
    save_checkpoint(folder, weights={"model": model.state_dict()}, state={"step": 0, "epoch": 0}, config=config)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from tunesmith.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "ds"
    prepare_dataset(
        [],
        out,
        source="synthetic",
        num_tracks=8,
        track_duration=2.6,
        sample_rate=8000,
        segment=1.0,
        min_segment=0.5,
        valid_fraction=0.25,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory) -> Path:
    return _save_codec(tmp_path_factory.mktemp("codec") / "ckpt")


def _copy_dataset(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tokens"))
    for split in ("train", "valid"):  # manifests hold absolute paths: point them at the copy
        path = dst / "egs" / split / "data.jsonl"
        path.write_text(path.read_text().replace(str(src), str(dst)))
    return dst


def test_codes_match_direct_encoding_and_reader_api(dataset: Path, codec_dir: Path) -> None:
    from tunesmith.models.codec import load_codec

    stats: list[SplitStats] = []
    cache = ensure_token_cache(dataset, codec_dir, batch_size=3, progress=False, shard_size=4, stats=stats)
    codec = load_codec(codec_dir)
    assert cache == dataset / "tokens" / codec_fingerprint(codec)[:16]
    assert {s.split for s in stats} == {"train", "valid"} and all(s.encoded_now == s.segments for s in stats)
    for split in ("train", "valid"):
        shards = TokenShards(cache, split, fingerprint=codec_fingerprint(codec))
        entries = read_manifest(dataset, split)
        assert len(shards) == len(entries) > 0 and shards.n_q == 3 and shards.bins == 64
        lengths = set()
        for i, entry in enumerate(entries):
            wav, _ = load_audio(resolve_path(dataset, entry), sample_rate=8000, channels=1)
            lengths.add(wav.shape[1])
            direct = codec.encode(torch.from_numpy(wav)[None])[0].numpy()
            codes = shards.codes(i)
            assert codes.dtype == np.int16 and codes.shape == direct.shape == (3, shards.num_frames(i))
            np.testing.assert_array_equal(codes, direct)
            assert shards.info(i) == json.loads(json.dumps(read_info(dataset, entry), default=str))
        assert len(lengths) > 1  # the fixture has tails shorter than a segment: grouping by length is exercised
    shards = TokenShards(cache, "train")
    window, start = shards.crop(0, 10, torch.Generator().manual_seed(3))
    assert window.shape == (3, 10) and 0 <= start <= shards.num_frames(0) - 10
    np.testing.assert_array_equal(window, shards.codes(0)[:, start : start + 10])
    window2, start2 = shards.crop(0, 10, np.random.default_rng(5))
    np.testing.assert_array_equal(window2, shards.codes(0)[:, start2 : start2 + 10])
    whole, zero = shards.crop(0, 10_000, torch.Generator().manual_seed(0))
    assert zero == 0 and whole.shape == (3, shards.num_frames(0))
    again: list[SplitStats] = []
    assert ensure_token_cache(dataset, codec_dir, progress=False, shard_size=4, stats=again) == cache
    assert all(s.encoded_now == 0 for s in again)


_KILLABLE = """
import sys, time
from tunesmith.data import token_cache
from tunesmith.data.token_cache.encoder import ShardEncoder
real = ShardEncoder._encode
def slow(self, wavs):
    time.sleep(0.15)
    return real(self, wavs)
ShardEncoder._encode = slow
token_cache.ensure_token_cache(sys.argv[1], sys.argv[2], batch_size=1, progress=False, shard_size=1)
"""


def test_resume_after_kill_finishes_without_redoing_shards(dataset: Path, codec_dir: Path, tmp_path: Path) -> None:
    data = _copy_dataset(dataset, tmp_path / "ds")
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(data), str(codec_dir)], env=os.environ.copy())
    deadline = time.monotonic() + 120
    done_shards: list[Path] = []
    while time.monotonic() < deadline and len(done_shards) < 3:
        done_shards = sorted(data.glob("tokens/*/train/shard-*.json"))
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(done_shards) >= 3, "the encode never got going"
    cache = done_shards[0].parents[1]
    assert not (cache / "train" / "index.npy").exists()  # killed before the end
    with pytest.raises(UserError, match="incomplete"):
        TokenShards(cache, "train")
    before = {p.name: p.stat().st_mtime_ns for p in (cache / "train").glob("shard-*.npy")}
    stats: list[SplitStats] = []
    assert ensure_token_cache(data, codec_dir, batch_size=1, progress=False, shard_size=1, stats=stats) == cache
    train = next(s for s in stats if s.split == "train")
    assert train.encoded_now == train.segments - len(before)  # only what was missing
    assert all((cache / "train" / name).stat().st_mtime_ns == t for name, t in before.items())
    fresh = ensure_token_cache(
        _copy_dataset(dataset, tmp_path / "fresh"), codec_dir, batch_size=1, progress=False, shard_size=1
    )
    for split in ("train", "valid"):
        resumed, reference = TokenShards(cache, split), TokenShards(fresh, split)
        assert len(resumed) == len(reference)
        for i in range(len(reference)):
            np.testing.assert_array_equal(resumed.codes(i), reference.codes(i))
        assert not list((cache / split).glob(".*"))  # no temporary files left behind


def test_a_second_encoder_waits_and_reuses_the_first_ones_tokens(
    dataset: Path, codec_dir: Path, tmp_path: Path, caplog
) -> None:
    data = _copy_dataset(dataset, tmp_path / "ds")
    first = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(data), str(codec_dir)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(data.glob("tokens/*/train/shard-*.json")):
            time.sleep(0.05)
        assert first.poll() is None, "the first encoder finished before the second one started"
        stats: list[SplitStats] = []
        with caplog.at_level("INFO", logger="tunesmith.encode"):
            cache = ensure_token_cache(data, codec_dir, batch_size=1, progress=False, shard_size=1, stats=stats)
        assert first.wait(60) == 0
    finally:
        first.kill()
    assert f"pid {first.pid}" in caplog.text and "is encoding this cache; waiting" in caplog.text
    assert stats and all(s.encoded_now == 0 for s in stats)  # nothing encoded twice
    assert len(TokenShards(cache, "train")) == stats[0].segments


def test_stale_cache_detection(dataset: Path, codec_dir: Path, tmp_path: Path) -> None:
    data = _copy_dataset(dataset, tmp_path / "ds")
    cache = ensure_token_cache(data, codec_dir, progress=False)
    other_codec = _save_codec(tmp_path / "other", seed=1)
    other_cache = ensure_token_cache(data, other_codec, progress=False)
    assert other_cache != cache  # another codec never reuses these tokens
    from tunesmith.models.codec import load_codec

    other_fp = codec_fingerprint(load_codec(other_codec))
    with pytest.raises(UserError, match="stale token cache"):
        TokenShards(cache, "train", fingerprint=other_fp)
    # the dataset is re-prepared: the manifest changes → the reader refuses, encode re-encodes that split
    manifest = data / "egs" / "train" / "data.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:-1]))
    with pytest.raises(UserError, match="changed since it was encoded"):
        TokenShards(cache, "train")
    stats: list[SplitStats] = []
    ensure_token_cache(data, codec_dir, progress=False, stats=stats)
    train = next(s for s in stats if s.split == "train")
    assert train.encoded_now == train.segments == len(lines) - 1
    assert len(TokenShards(cache, "train")) == len(lines) - 1
    assert next(s for s in stats if s.split == "valid").encoded_now == 0


def test_a_damaged_shard_is_detected_and_re_encoded(dataset: Path, codec_dir: Path, tmp_path: Path, caplog) -> None:
    data = _copy_dataset(dataset, tmp_path / "ds")
    cache = ensure_token_cache(data, codec_dir, progress=False, shard_size=2)
    reference = [TokenShards(cache, "train").codes(i) for i in range(len(TokenShards(cache, "train")))]
    shard = cache / "train" / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated (a full disk, a killed copy)
    with pytest.raises(UserError, match=r"shard-00001.npy: damaged token shard .*tunesmith encode"):
        TokenShards(cache, "train")
    stats: list[SplitStats] = []
    with caplog.at_level("WARNING", logger="tunesmith.encode"):
        ensure_token_cache(data, codec_dir, progress=False, shard_size=2, stats=stats)
    assert "shard 1: shard-00001.npy is truncated" in caplog.text
    assert next(s for s in stats if s.split == "train").encoded_now == 2  # that shard only
    shards = TokenShards(cache, "train")
    for i, codes in enumerate(reference):
        np.testing.assert_array_equal(shards.codes(i), codes)
    # same size, one value changed: the recorded sha256 catches it on the next encode
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0x01
    shard.write_bytes(bytes(raw))
    caplog.clear()
    with caplog.at_level("WARNING", logger="tunesmith.encode"):
        ensure_token_cache(data, codec_dir, progress=False, shard_size=2)
    assert "shard 1: shard-00001.npy is corrupted" in caplog.text
    np.testing.assert_array_equal(TokenShards(cache, "train").codes(2), reference[2])


def test_bandwidth_gets_its_own_cache_and_bad_files_are_skipped(dataset: Path, tmp_path: Path, caplog) -> None:
    data = _copy_dataset(dataset, tmp_path / "ds")
    codec = _save_codec(tmp_path / "dropout", q_dropout=True)
    bad = resolve_path(data, read_manifest(data, "train")[1])
    bad.write_bytes(b"not audio at all")
    full = ensure_token_cache(data, codec, progress=False)
    low = ensure_token_cache(data, codec, bandwidth=6.0, progress=False)  # 1000 frames/s x 6 bits: 6 kbps each
    shards_low, shards_full = TokenShards(low, "train"), TokenShards(full, "train")
    assert low != full and shards_low.n_q == 1 and shards_full.n_q == 3
    n_entries = len(read_manifest(data, "train"))
    assert len(shards_full) == n_entries - 1 and shards_full.meta["skipped"] == 1
    assert 1 not in [shards_full.manifest_line(i) for i in range(len(shards_full))]
    assert any("skipping segment" in r.message and str(bad) in r.message for r in caplog.records)
    with pytest.raises(UserError, match="not supported"):
        ensure_token_cache(data, codec, bandwidth=5.0, progress=False)


def test_encode_command(dataset: Path, codec_dir: Path, tmp_path: Path, capsys) -> None:
    from tunesmith.cli import main

    data = _copy_dataset(dataset, tmp_path / "ds")
    assert main(["encode", str(data), "--codec", str(codec_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["splits"]) == {"train", "valid"} and summary["n_q"] == 3
    assert summary["splits"]["train"]["audio_seconds_per_second"] > 0
    assert main(["encode", str(data), "--codec", str(codec_dir)]) == 0
    assert "already cached" in capsys.readouterr().out
    assert main(["encode", str(tmp_path / "nope"), "--codec", str(codec_dir)]) == 2
