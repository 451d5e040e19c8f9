"""Codec model: padded convolutions against conv1d, shapes for every preset, bandwidths, loading, fingerprint."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tunesmith.config import list_presets, resolve
from tunesmith.errors import UserError
from tunesmith.models.codec import (
    Codec,
    CodecModel,
    CodecModelConfig,
    build_codec_model,
    codec_fingerprint,
    load_codec,
    register_codec_loader,
)
from tunesmith.models.codec.seanet import PaddedConv1d, PaddedConvTranspose1d, to_frames_layout

TINY = {"sample_rate": 8000, "dimension": 8, "n_filters": 4, "ratios": [4, 2], "lstm": 1, "n_q": 3, "bins": 16}


def _reference_conv(x: torch.Tensor, conv: PaddedConv1d) -> torch.Tensor:
    """Explicit padding by the documented rule, then plain conv1d."""
    w, b = conv.conv.weight, conv.conv.bias
    length, s, ek = x.shape[-1], conv.stride, conv.effective_kernel
    total = (math.ceil(length / s) - 1) * s + ek - length
    fixed = ek - s
    left = fixed if conv.causal else fixed - fixed // 2
    x = F.pad(x, (left, total - left), mode=conv.pad_mode)
    return F.conv1d(x, w, b, stride=s, dilation=conv.dilation)


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "causal", "pad_mode", "length"),
    [
        (7, 1, 1, False, "constant", 50),
        (3, 1, 4, False, "constant", 33),
        (4, 2, 1, False, "constant", 40),
        (10, 5, 1, False, "constant", 45),
        (10, 5, 1, False, "constant", 47),  # not a whole number of strides
        (16, 8, 1, True, "constant", 64),
        (3, 1, 2, True, "constant", 20),
        (7, 1, 1, False, "reflect", 50),
        (2, 1, 1, False, "constant", 9),  # even effective kernel
    ],
)
def test_padded_conv_matches_explicit_padding(kernel, stride, dilation, causal, pad_mode, length) -> None:
    torch.manual_seed(0)
    conv = PaddedConv1d(3, 5, kernel, stride, dilation, causal=causal, pad_mode=pad_mode)
    x = torch.randn(2, 3, length)
    ours = conv(to_frames_layout(x)).squeeze(2)
    ref = _reference_conv(x, conv)
    assert ours.shape == (2, 5, math.ceil(length / stride))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("stride", "causal"), [(2, False), (5, False), (8, False), (4, True), (1, False)])
def test_padded_conv_transpose_matches_trimmed_conv_transpose1d(stride: int, causal: bool) -> None:
    torch.manual_seed(0)
    k = 2 * stride
    conv = PaddedConvTranspose1d(4, 3, k, stride, causal=causal)
    x = torch.randn(2, 4, 11)
    ours = conv(to_frames_layout(x)).squeeze(2)
    full = F.conv_transpose1d(x, conv.convtr.weight, conv.convtr.bias, stride=stride)
    surplus = k - stride
    left = 0 if causal else surplus - surplus // 2
    ref = full[..., left : full.shape[-1] - (surplus - left)]
    assert ours.shape == (2, 3, 11 * stride)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_every_preset_builds_with_documented_shapes() -> None:
    from tunesmith.tasks.codec import CodecConfig

    presets = list_presets("codec")
    assert {"tiny", "encodec-32khz"} <= set(presets)
    for name in presets:
        cfg = resolve("codec", CodecConfig, name, []).config.model
        model = CodecModel(cfg).eval()
        hop = math.prod(cfg.ratios)
        assert model.frame_rate == cfg.sample_rate / hop
        length = hop * 3 + 7  # not a whole number of frames
        wav = torch.randn(1, cfg.channels, length) * 0.1
        codes = model.encode(wav)
        assert codes.shape == (1, cfg.n_q, 4) and codes.dtype == torch.long
        assert int(codes.min()) >= 0 and int(codes.max()) < cfg.bins
        assert model.decode(codes).shape == (1, cfg.channels, 4 * hop)
        assert model(wav).wav.shape == wav.shape
    big = resolve("codec", CodecConfig, "encodec-32khz", []).config.model
    assert (big.sample_rate, big.channels, big.n_q, big.bins) == (32000, 1, 4, 2048)
    assert big.sample_rate / math.prod(big.ratios) == 50.0
    assert CodecModel(big).supported_bandwidths == [2.2]


def test_bandwidths_and_error_lists_supported() -> None:
    model = build_codec_model({**TINY, "q_dropout": True})
    # 8000 / 8 = 1000 frames/s, log2(16) = 4 bits → 4 kbps per codebook
    assert model.supported_bandwidths == [4.0, 8.0, 12.0]
    model.set_bandwidth(8.0)
    assert model.n_q == 2 and model.encode(torch.zeros(1, 1, 80)).shape == (1, 2, 10)
    with pytest.raises(UserError, match=r"6 kbps is not supported.*4, 8, 12 kbps"):
        model.set_bandwidth(6.0)
    fixed = build_codec_model(TINY)  # trained without quantizer dropout: only the full bandwidth
    assert fixed.supported_bandwidths == [12.0]
    with pytest.raises(UserError, match=r"supported: 12 kbps"):
        fixed.set_bandwidth(4.0)


def test_bad_input_errors() -> None:
    model = build_codec_model(TINY)
    with pytest.raises(UserError, match="1 channel"):
        model.encode(torch.zeros(1, 2, 80))
    with pytest.raises(UserError, match="unknown keys"):
        build_codec_model({**TINY, "n_filter": 3})
    with pytest.raises(UserError, match="model.n_q"):
        CodecModel(CodecModelConfig(**{**TINY, "n_q": 0}))


def test_protocol_and_fingerprint_changes_with_weights_and_bandwidth() -> None:
    torch.manual_seed(0)
    model = build_codec_model({**TINY, "q_dropout": True}).eval()
    assert isinstance(model, Codec)
    first = codec_fingerprint(model)
    assert first == codec_fingerprint(model) and len(first) == 64
    model.set_bandwidth(4.0)
    assert codec_fingerprint(model) != first
    model.set_bandwidth(12.0)
    assert codec_fingerprint(model) == first
    with torch.no_grad():
        model.quantizer.layers[0].embed[0, 0] += 1e-3
    assert codec_fingerprint(model) != first


def _write_checkpoint(folder, model: CodecModel, meta_task: str = "codec") -> None:
    from tunesmith.artifacts.checkpoint import save_checkpoint

    config = {"meta": {"task": meta_task}, "config": {"model": model.config_dict()}}
    save_checkpoint(folder, weights={"model": model.state_dict()}, state={"step": 1, "epoch": 1}, config=config)


def test_load_codec_from_checkpoint_and_run_folder(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_codec_model({**TINY, "q_dropout": True}).eval()
    _write_checkpoint(tmp_path / "run" / "checkpoints" / "best", model)
    wav = torch.randn(1, 1, 400) * 0.1
    for path in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "best"):
        loaded = load_codec(path, bandwidth=8.0)
        assert loaded.n_q == 2 and not loaded.training
        model.set_bandwidth(8.0)
        assert torch.equal(loaded.encode(wav), model.encode(wav))
        assert codec_fingerprint(loaded) == codec_fingerprint(model)
    with pytest.raises(UserError, match="supported"):
        load_codec(tmp_path / "run", bandwidth=6.0)
    with pytest.raises(UserError, match="no such"):
        load_codec(tmp_path / "missing")
    _write_checkpoint(tmp_path / "lm" / "checkpoints" / "best", model, meta_task="lm")
    with pytest.raises(UserError, match="not a codec"):
        load_codec(tmp_path / "lm")


def test_registered_loader_handles_transformers_directories(tmp_path, monkeypatch) -> None:
    from tunesmith.models.codec import loading

    monkeypatch.setattr(loading, "_LOADERS", [])  # keep the global registry clean for other tests
    monkeypatch.setattr(loading, "_plugins_imported", True)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    seen = {}

    def loader(path, bandwidth, device):
        seen.update(path=path, bandwidth=bandwidth, device=device)
        return build_codec_model(TINY)

    def is_encodec(path) -> bool:
        return loading.model_type(path) == "encodec"

    register_codec_loader(is_encodec, loader)
    codec = load_codec(hf_dir, bandwidth=1.5)
    assert isinstance(codec, Codec) and seen == {"path": hf_dir, "bandwidth": 1.5, "device": "cpu"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "musicgen"}))
    with pytest.raises(UserError, match="Hugging Face support"):
        load_codec(tmp_path / "other")
