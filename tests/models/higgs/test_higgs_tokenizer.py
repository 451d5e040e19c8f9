"""tunesmith's HiggsAudio v2 tokenizer against transformers' HiggsAudioV2TokenizerModel outputs.

The reference (tests/fixtures/higgs_tokenizer/) was made once by its ``make_reference.py`` with
transformers 5.23 and torchaudio 2.11's Python parts; these tests need neither torchaudio nor transformers.
Tolerances: codes identical; intermediate features and decoded audio within 1e-4 of the peak value (float32
summation order differs between thread counts; a deep randomly initialised conv stack amplifies it: seen
≤ 1.6e-5 of the peak on one thread, ≤ 1.3e-7 on two).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tunesmith.errors import UserError
from tunesmith.models.codec.protocol import Codec
from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "higgs_tokenizer"
MODEL = FIXTURE / "model"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def tok():
    return load_higgs_tokenizer(MODEL)


def close_to_peak(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-4) -> None:
    assert actual.shape == expected.shape
    peak = float(np.abs(expected).max())
    assert peak > 0
    assert float(np.abs(actual - expected).max()) <= rel * peak


def test_shape_and_protocol(tok):
    assert isinstance(tok, Codec)
    assert (tok.sample_rate, tok.channels, tok.frame_rate, tok.bins) == (24000, 1, 25.0, 32)
    assert tok.supported_bandwidths == [0.25, 0.5]
    assert tok.n_q == 4 and len(tok.weights_sha256) == 64


def test_intermediate_features_match(tok, ref):
    wav = torch.from_numpy(ref["wav"])
    with torch.no_grad():
        close_to_peak(tok.semantic_features(wav).numpy(), ref["semantic"])
        close_to_peak(tok.embeddings(wav).numpy(), ref["embeddings"])


@pytest.mark.parametrize("case", ["", "_exact"])
def test_codes_identical_and_decoded_audio_close(tok, ref, case):
    wav = torch.from_numpy(ref[f"wav{case}"])
    codes = tok.encode(wav)
    assert codes.dtype == torch.long
    np.testing.assert_array_equal(codes.numpy(), ref[f"codes{case}"])
    decoded = tok.decode(torch.from_numpy(ref[f"codes{case}"]))
    close_to_peak(decoded.numpy(), ref[f"decoded{case}"])
    assert decoded.shape[-1] == codes.shape[-1] * 960


def test_lower_bandwidth_uses_the_first_codebooks(ref):
    tok = load_higgs_tokenizer(MODEL)
    tok.set_bandwidth(0.25)
    assert tok.n_q == 2
    np.testing.assert_array_equal(tok.encode(torch.from_numpy(ref["wav"])).numpy(), ref["codes_low"])
    with pytest.raises(UserError, match=r"valid bandwidths: \[0.25, 0.5\]"):
        tok.set_bandwidth(6.0)


def test_bad_inputs_are_user_errors(tok):
    with pytest.raises(UserError, match="mono"):
        tok.encode(torch.zeros(1, 2, 960))
    # below HuBERT's 400-sample receptive field transformers raises a conv RuntimeError (checked: 118 samples
    # fail, 119 encode); tunesmith says why: ceil(119 · 2/3) + 2 · 160 padding = 400 samples at 16 kHz
    assert tok.min_samples == 119
    with pytest.raises(UserError, match="118 samples is too short to encode"):
        tok.encode(torch.zeros(1, 1, 118))
    assert tok.encode(torch.zeros(1, 1, 119)).shape == (1, 4, 1)
    with pytest.raises(UserError, match=r"codes must lie in \[0, 32\)"):
        tok.decode(torch.full((1, 4, 3), 33))
    with pytest.raises(UserError, match="decodes codes"):
        tok.decode(torch.zeros(1, 5, 3, dtype=torch.long))


def test_weight_norm_pairs_are_folded(tmp_path, ref):
    """A checkpoint that stores a DAC conv as (weight_g, weight_v) loads to the same codes."""
    state = load_file(str(MODEL / "model.safetensors"))
    key = "acoustic_encoder.block.2.conv1.weight"
    w = state.pop(key)
    norm = w.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    state[key[: -len("weight")] + "weight_g"] = norm
    state[key[: -len("weight")] + "weight_v"] = w * 3.0
    shutil.copy(MODEL / "config.json", tmp_path / "config.json")
    save_file(state, str(tmp_path / "model.safetensors"))
    tok = load_higgs_tokenizer(tmp_path)
    np.testing.assert_array_equal(tok.encode(torch.from_numpy(ref["wav"])).numpy(), ref["codes"])


def test_damaged_or_foreign_directories_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_higgs_tokenizer(tmp_path)
    config = json.loads((MODEL / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "encodec"}))
    with pytest.raises(UserError, match="model_type is 'encodec'"):
        load_higgs_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="no model.safetensors"):
        load_higgs_tokenizer(tmp_path)
    data = (MODEL / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read safetensors"):
        load_higgs_tokenizer(tmp_path)
    state = load_file(str(MODEL / "model.safetensors"))
    del state["fc.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match=r"missing 1 \(e.g. \['fc.weight'\]\)"):
        load_higgs_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "codebook_dim": 4}))
    save_file(load_file(str(MODEL / "model.safetensors")), str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match="another shape"):
        load_higgs_tokenizer(tmp_path)
