"""The AudioCraft benchmark peer: its torchaudio/xformers stand-ins, and (when its venv exists) its CLI.

The stand-ins are checked against librosa/scipy, an independent STFT and mel-filterbank
implementation. They are loaded under private module names so this test process never sees a
``torchaudio`` or ``xformers`` module. The CLI tests run only where ``bash
benchmarks/peers/setup_audiocraft.sh`` has made benchmarks/.work/audiocraft-venv (never in CI).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "benchmarks" / "peers" / "stubs"
PEER = ROOT / "benchmarks" / "peers" / "audiocraft_peer.py"
PEER_PYTHON = ROOT / "benchmarks" / ".work" / "audiocraft-venv" / "bin" / "python"
CONFIG_DIR = ROOT / "benchmarks" / ".work" / "audiocraft-config"

librosa = pytest.importorskip("librosa")
scipy_signal = pytest.importorskip("scipy.signal")


def load_stub(name: str) -> ModuleType:
    """Import benchmarks/peers/stubs/<name> as the package ``_peer_stub_<name>``."""
    alias = f"_peer_stub_{name}"
    if alias in sys.modules:
        return sys.modules[alias]
    init = STUBS / name / "__init__.py"
    spec = importlib.util.spec_from_file_location(alias, init, submodule_search_locations=[str(init.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torchaudio() -> ModuleType:
    return load_stub("torchaudio")


@pytest.fixture(scope="module")
def xformers() -> ModuleType:
    return load_stub("xformers")


def signal(samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 8000.0
    return (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * rng.standard_normal(samples)).astype(np.float32)


def window_energy(win_length: int) -> float:
    """sqrt(sum(w**2)) of a periodic Hann window, from scipy."""
    return float(np.sqrt(np.sum(scipy_signal.get_window("hann", win_length, fftbins=True) ** 2)))


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels", "f_min", "f_max"),
    [(32000, 1024, 64, 64.0, 16000.0), (16000, 400, 40, 0.0, 8000.0), (24000, 2048, 80, 30.0, 9000.0)],
)
def test_mel_filterbank_matches_librosa_htk(torchaudio, sample_rate, n_fft, n_mels, f_min, f_max):
    fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)
    expected = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=True, norm=None
    ).T
    assert fb.shape == (n_fft // 2 + 1, n_mels)
    np.testing.assert_allclose(fb.numpy(), expected, atol=2e-5)


@pytest.mark.parametrize(("n_fft", "hop", "win"), [(1024, 256, 1024), (512, 128, 400), (128, 32, 128)])
def test_complex_spectrogram_as_the_msstft_discriminator_uses_it(torchaudio, n_fft, hop, win):
    # MultiScaleSTFTDiscriminator: center=False, pad_mode=None, power=None, normalized=True.
    x = signal(8000)
    spec = torchaudio.transforms.Spectrogram(
        n_fft=n_fft, hop_length=hop, win_length=win, window_fn=torch.hann_window,
        normalized=True, center=False, pad_mode=None, power=None,
    )(torch.from_numpy(x)[None, None])  # fmt: skip
    expected = librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=False)
    expected = expected / window_energy(win)
    assert spec.is_complex() and spec.shape == (1, 1, *expected.shape)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(spec[0, 0].numpy() / scale, expected / scale, atol=1e-5)


def test_power_spectrogram_centered_reflect_and_frame_length_norm(torchaudio):
    x = signal(4000, seed=1)
    power = torchaudio.transforms.Spectrogram(n_fft=256, hop_length=64, power=2.0)(torch.from_numpy(x))
    stft = librosa.stft(x, n_fft=256, hop_length=64, window="hann", center=True, pad_mode="reflect")
    np.testing.assert_allclose(power.numpy(), np.abs(stft) ** 2, rtol=1e-3, atol=1e-3 * (np.abs(stft) ** 2).max())
    magnitude = torchaudio.transforms.Spectrogram(n_fft=256, hop_length=64, power=1.0, normalized="frame_length")(
        torch.from_numpy(x)
    )
    np.testing.assert_allclose(magnitude.numpy(), np.abs(stft) / math.sqrt(256), rtol=1e-3, atol=1e-4)


def test_mel_spectrogram_as_the_mel_losses_use_it(torchaudio):
    # MelSpectrogramWrapper: hann window, center=False, power 2, htk scale, unnormalised filters.
    sample_rate, n_fft, hop, n_mels, f_min = 32000, 1024, 256, 64, 64.0
    x = np.stack([signal(6000, seed=2), signal(6000, seed=3)])[:, None]  # [B=2, C=1, T]
    mel = torchaudio.transforms.MelSpectrogram(
        n_mels=n_mels, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, win_length=n_fft,
        f_min=f_min, f_max=None, normalized=False, window_fn=torch.hann_window, center=False,
    )(torch.from_numpy(x))  # fmt: skip
    expected = librosa.feature.melspectrogram(
        y=x, sr=sample_rate, n_fft=n_fft, hop_length=hop, center=False, power=2.0,
        n_mels=n_mels, fmin=f_min, fmax=sample_rate / 2, htk=True, norm=None,
    )  # fmt: skip
    assert mel.shape == expected.shape == (2, 1, n_mels, 1 + (6000 - n_fft) // hop)
    np.testing.assert_allclose(mel.numpy(), expected, rtol=1e-3, atol=1e-4 * expected.max())


def test_mel_spectrogram_gradient_matches_finite_differences(torchaudio):
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=800, n_fft=16, hop_length=8, n_mels=4, center=False
    ).double()
    x = torch.randn(1, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(transform, (x,), eps=1e-6, atol=1e-5)


def test_state_dict_keys_follow_torchaudio(torchaudio):
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=64, n_mels=8)
    assert set(mel.state_dict()) == {"spectrogram.window", "mel_scale.fb"}
    assert mel.state_dict()["mel_scale.fb"].shape == (33, 8)


def test_what_the_stub_lacks_fails_loudly(torchaudio):
    with pytest.raises(AttributeError, match="peer stub"):
        torchaudio.Loudness  # noqa: B018
    with pytest.raises(ValueError, match="htk"):
        torchaudio.functional.melscale_fbanks(65, 0.0, 8000.0, 8, 16000, norm="slaney")
    with pytest.raises(ValueError, match="normalized"):
        torchaudio.functional.spectrogram(torch.zeros(512), 0, torch.hann_window(64), 64, 16, 64, 2.0, "energy")


def test_xformers_ops(xformers):
    packed = torch.randn(2, 5, 3, 4, 8)
    q, k, v = xformers.ops.unbind(packed, dim=2)
    assert torch.equal(q, packed[:, :, 0]) and torch.equal(v, packed[:, :, 2]) and k.shape == (2, 5, 4, 8)
    assert xformers.ops.LowerTriangularMask() is not None
    with pytest.raises(RuntimeError, match="efficient_attention_backend='torch'"):
        xformers.ops.memory_efficient_attention(q, k, v)


# ---------------------------------------------------------------------------------------------- CLI

needs_peer_venv = pytest.mark.skipif(
    not (PEER_PYTHON.exists() and (CONFIG_DIR / "config.yaml").exists()),
    reason="no AudioCraft peer venv: run `bash benchmarks/peers/setup_audiocraft.sh`",
)
COMMON = ["--threads", "1", "--steps", "1", "--warmup", "1"]
TINY_LM = ["--dim", "32", "--layers", "1", "--heads", "2", "--n-q", "2", "--card", "16", "--text-words", "4"]
TINY_CODEC = ["--n-filters", "4", "--dimension", "16", "--lstm-layers", "1", "--n-q", "2", "--bins", "32"]


def run_peer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PEER_PYTHON), str(PEER), *args], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )


def run_peer_json(*args: str) -> dict:
    result = run_peer(*args, *COMMON)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert report["peer"] == "audiocraft" and report["audiocraft_version"] == "1.3.0"
    assert report["torch_version"].startswith("2.13.0") and report["torch_threads"] == 1
    assert len(report["step_times_s"]) == len(report["step_cpu_times_s"]) == 1 and report["median_step_s"] > 0
    assert report["cpu_per_wall"] > 0
    return report


@pytest.mark.slow
@needs_peer_venv
def test_peer_lm_train_and_generate():
    train = run_peer_json("lm-train", *TINY_LM, "--batch", "2", "--frames", "12")
    assert train["cross_attention"] and train["optimizer"] == "AdamW"
    assert train["codebook_tokens_per_step"] == 2 * 12 * 2
    assert train["codebook_tokens_per_s"] == pytest.approx(48 / train["median_step_s"], rel=1e-3)
    # freshly initialised: per-codebook cross-entropy close to ln(card)
    assert abs(train["losses"][0] - math.log(16)) < 1.5

    generate = run_peer_json("lm-generate", *TINY_LM, "--frames", "8", "--top-k", "8", "--cfg", "3.0")
    assert generate["cfg_applied"] and generate["model_batch"] == 2 and generate["decode_steps"] == 9
    assert generate["frames_per_s"] == pytest.approx(8 / generate["median_step_s"], rel=1e-3)


@pytest.mark.slow
@needs_peer_venv
def test_peer_codec_train_and_encode():
    tiny = [*TINY_CODEC, "--disc-filters", "4", "--disc-n-ffts", "256,128", "--disc-hop-lengths", "64,32"]
    tiny += ["--disc-win-lengths", "256,128"]
    train = run_peer_json("codec-train", *tiny, "--batch", "1", "--segment", "0.1")
    assert set(train["loss_weights"]) == {"adv_msstftd", "feat_msstftd", "l1", "msspec"}
    metrics = train["last_step_metrics"]
    assert {"d_loss", "penalty", "g_loss", "mel", "sisnr"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())

    encode = run_peer_json("codec-encode", *TINY_CODEC, "--seconds", "2")
    assert encode["codes_shape"] == [1, 2, 2 * encode["frame_rate"]]
    assert encode["audio_seconds_per_s"] == pytest.approx(2 / encode["median_step_s"], rel=1e-3)


@needs_peer_venv
def test_peer_bad_arguments_get_a_clear_error():
    result = run_peer("lm-train", "--dim", "30", "--heads", "4")
    assert result.returncode == 2
    assert "not divisible by --heads" in result.stderr and "Traceback" not in result.stderr
