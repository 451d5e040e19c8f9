"""The token cache with the HiggsAudio v2 audio tokenizer (tiny fixture, 4 codebooks × 32 codes, 24 kHz, hop 960):
speech clips of different lengths, each cached exactly as the tokenizer encodes it alone, encoded once, and keyed
by the tokenizer's weights (+ config and bandwidth)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from support.speech import prepare_speech_dataset, requires_espeak
from tunesmith.audio.io import load_audio
from tunesmith.data.datasets.tokens import open_token_cache
from tunesmith.data.manifest import read_manifest, resolve_path
from tunesmith.data.prepare import prepare_dataset
from tunesmith.models.codec import codec_fingerprint
from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "higgs_tokenizer" / "model"
SR = 24000
# samples per clip: different lengths (not multiples of the hop), one equal-length pair (batched together),
# and one clip below the tokenizer's minimum (119 samples): skipped with the reason, never a crash
CLIPS = {"c0": 3100, "c1": 4080, "c2": 4080, "c3": 2000, "c4": 5500, "tiny": 100}
SPEAKER = {"c0": "anna", "c1": "anna", "c2": "bert", "c3": "bert", "c4": "anna", "tiny": "bert"}


class CountingEncode:
    """Wraps a tokenizer's ``encode`` and records the shape of every batch it gets."""

    def __init__(self, tokenizer) -> None:
        self.inner, self.shapes = tokenizer.encode, []
        tokenizer.encode = self

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(wav.shape))
        return self.inner(wav)


@pytest.fixture(scope="module")
def speech_data(tmp_path_factory) -> Path:
    """An LJSpeech-layout dataset (with a speaker column) of noise-like clips at 24 kHz, prepared."""
    root = tmp_path_factory.mktemp("higgs_cache")
    src = root / "lj"
    (src / "wavs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for uid, samples in CLIPS.items():
        envelope = 0.5 + 0.5 * np.sin(np.linspace(0, 7 * np.pi, samples))  # syllable-like amplitude
        sf.write(str(src / "wavs" / f"{uid}.wav"), 0.3 * envelope * rng.standard_normal(samples), SR, subtype="FLOAT")
        rows.append(f"{uid}|Clip {uid} says something.||{SPEAKER[uid]}")
    (src / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = root / "data"
    prepare_dataset([src], data, source="ljspeech", sample_rate=SR, valid_fraction=0.0, progress=False)
    assert len(read_manifest(data, "train")) == len(CLIPS)
    return data


def _tokenizer(path: Path = FIXTURE):
    return load_higgs_tokenizer(path)


@dataclass
class Encoded:
    data: Path
    tokenizer: Any
    calls: CountingEncode
    shards: Any  # TokenShards of the train split


@pytest.fixture(scope="module")
def encoded(speech_data) -> Encoded:
    """The dataset encoded once by the fixture tokenizer, every encode call recorded."""
    tokenizer = _tokenizer()
    calls = CountingEncode(tokenizer)
    shards = open_token_cache(str(speech_data), tokenizer, progress=False)["train"]
    return Encoded(speech_data, tokenizer, calls, shards)


def _cache_copy(speech_data: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared dataset without its tokens (its manifests still name the original's audio)."""
    data = tmp_path / "data"
    shutil.copytree(speech_data, data, ignore=shutil.ignore_patterns("tokens"))
    return data


def _wav(data: Path, shards: Any, i: int) -> np.ndarray:
    """The prepared audio of cache item ``i``: float32 [1, T] at 24 kHz."""
    entry = read_manifest(data, "train")[shards.manifest_line(i)]
    return load_audio(resolve_path(data, entry), sample_rate=SR, channels=1)[0]


def test_cached_codes_equal_each_clip_encoded_alone(encoded):
    shards, encode = encoded.shards, encoded.calls.inner
    assert len(shards) == len(CLIPS) - 1 and shards.meta["skipped"] == 1  # "tiny" is below min_samples
    skipped = [row for f in sorted(shards.dir.glob("shard-*.json")) for row in json.loads(f.read_text())["skipped"]]
    assert len(skipped) == 1 and "too short to encode (100 samples; the codec needs 119" in skipped[0]["reason"]
    # never zero-padded together: each batch holds clips of one length; the equal-length pair was one batch of 2
    assert sorted(encoded.calls.shapes) == sorted([(1, 1, n) for n in (3100, 2000, 5500)] + [(2, 1, 4080)])

    seen, frames = set(), set()
    for i in range(len(shards)):
        info = shards.info(i)
        uid = info["name"]
        seen.add(uid)
        alone = encode(torch.from_numpy(_wav(encoded.data, shards, i))[None]).numpy()[0]  # [K, F] of this clip alone
        cached = shards.codes(i)
        assert cached.shape == alone.shape and cached.shape[0] == 4  # the whole clip, at its own length
        assert abs(cached.shape[1] - CLIPS[uid] / 960) <= 1
        np.testing.assert_array_equal(cached, alone)
        frames.add(cached.shape[1])
        assert info["transcript"] == f"Clip {uid} says something." and info["speaker"] == SPEAKER[uid]
    assert seen == set(CLIPS) - {"tiny"} and len(frames) == 4  # variable lengths stored side by side

    # the check can fail: encoding a clip zero-padded next to a longer one changes its codes (global attention)
    c3, c4 = (next(i for i in range(len(shards)) if shards.info(i)["name"] == n) for n in ("c3", "c4"))
    w3, w4 = _wav(encoded.data, shards, c3), _wav(encoded.data, shards, c4)
    padded = np.zeros((2, 1, w4.shape[1]), np.float32)
    padded[0, :, : w3.shape[1]], padded[1] = w3, w4
    together = encode(torch.from_numpy(padded)).numpy()[0][:, : shards.num_frames(c3)]
    assert not np.array_equal(together, shards.codes(c3))


def test_encoded_once(encoded, tmp_path):
    before = len(encoded.calls.shapes)
    assert before > 0
    again = open_token_cache(str(encoded.data), encoded.tokenizer, progress=False)["train"]  # same object
    assert len(encoded.calls.shapes) == before  # nothing re-encoded
    moved = tmp_path / "elsewhere" / "tokenizer"  # the same weights loaded from another folder: same key
    shutil.copytree(FIXTURE, moved)
    other = _tokenizer(moved)
    other_calls = CountingEncode(other)
    reopened = open_token_cache(str(encoded.data), other, progress=False)["train"]
    assert other_calls.shapes == [] and reopened.cache_dir == encoded.shards.cache_dir == again.cache_dir
    for i in range(len(reopened)):
        np.testing.assert_array_equal(reopened.codes(i), encoded.shards.codes(i))


def test_other_weights_or_bandwidth_get_another_cache(encoded, tmp_path):
    from safetensors.torch import load_file, save_file

    base = encoded.tokenizer
    described = json.loads((encoded.shards.cache_dir / "codec.json").read_text())
    assert described["weights_sha256"] == base.weights_sha256 and described["fingerprint"] == codec_fingerprint(base)
    assert (described["sample_rate"], described["frame_rate"], described["n_q"], described["bins"]) == (SR, 25, 4, 32)

    changed = tmp_path / "changed"
    shutil.copytree(FIXTURE, changed)
    state = load_file(str(changed / "model.safetensors"))
    state["fc.weight"] = state["fc.weight"] * 1.01
    save_file(state, str(changed / "model.safetensors"))
    other = _tokenizer(changed)
    assert other.weights_sha256 != base.weights_sha256 and codec_fingerprint(other) != codec_fingerprint(base)
    calls = CountingEncode(other)
    data = _cache_copy(encoded.data, tmp_path)
    other_shards = open_token_cache(str(data), other, progress=False)["train"]
    assert calls.shapes and other_shards.cache_dir.name != encoded.shards.cache_dir.name  # its own folder

    fewer = _tokenizer()  # the same weights at a lower bandwidth (fewer codebooks): another key too
    fewer.set_bandwidth(fewer.supported_bandwidths[0])
    assert fewer.n_q < base.n_q and codec_fingerprint(fewer) not in (codec_fingerprint(base), codec_fingerprint(other))


@requires_espeak
def test_espeak_speech_end_to_end(tmp_path):
    """espeak-ng speech → prepare (folder layout, 22.05 → 24 kHz) → HiggsAudio tokens with transcript and speaker."""
    src, data = prepare_speech_dataset(tmp_path, sentences=["Yes."])
    tokenizer = _tokenizer()
    shards = open_token_cache(str(data), tokenizer, progress=False)["train"]
    assert len(shards) == len(src.clips) == 2
    entries = read_manifest(data, "train")
    for i in range(len(shards)):
        info = shards.info(i)
        clip = src.clip(info["title"])
        assert (info["transcript"], info["speaker"]) == ("Yes.", clip.speaker)
        wav, _ = load_audio(resolve_path(data, entries[shards.manifest_line(i)]), sample_rate=SR, channels=1)
        np.testing.assert_array_equal(shards.codes(i), tokenizer.encode(torch.from_numpy(wav)[None]).numpy()[0])
