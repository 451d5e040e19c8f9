"""`tunesmith review`: checkpoints × fixed-seed samples, resumability, PNG/SVG rendering, and the page in Chromium."""

from __future__ import annotations

import html.parser
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch

from support.browser import headless_chromium
from support.lm import make_codec_dir, make_lm_dir
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.errors import UserError
from tunesmith.review import (
    Chart,
    Series,
    colorize,
    history_charts,
    list_checkpoints,
    mel_image,
    nice_ticks,
    png_bytes,
    read_history,
    review_run,
    select_checkpoints,
    svg_chart,
)

PROMPTS = ["bright fast melody", "dark slow drone"]


# --------------------------------------------------------------------------- fixtures


def _save(folder: Path, weights: dict, config: dict, epoch: int) -> None:
    ckpt.save_checkpoint(folder, weights={"model": weights}, state={"step": 10 * epoch, "epoch": epoch}, config=config)


def _history(run_dir: Path, epochs: int) -> None:
    lines = []
    for e in range(1, epochs + 1):
        for s in range(10 * (e - 1) + 1, 10 * e + 1, 3):
            lines.append({"stage": "train_step", "epoch": e, "step": s, "loss": 5.0 / s, "lr": 1e-3, "grad_norm": 1.5})
        lines.append({"stage": "train", "epoch": e, "step": 10 * e, "loss": 4.0 / e})
        valid = {"loss": 4.5 / e, "ce_q0": 4.4 / e, "ce_q1": 4.6 / e, "ppl": "nan"}
        lines.append({"stage": "valid", "epoch": e, "step": 10 * e, **valid})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (run_dir / "history.jsonl").write_text(text + '{"stage": "train_step", "ep')  # a write cut by a kill


def _run_files(run_dir: Path, task: str, config: dict, epochs: int) -> None:
    meta = {"task": task, "preset": "tiny", "signature": run_dir.name, "delta": {"optim.lr": 0.002}, "config": config}
    (run_dir / "run.json").write_text(json.dumps(meta))
    best = {"metric": "loss", "value": 4.5, "epoch": 1}
    status = {"state": "finished", "epoch": epochs, "step": 10 * epochs, "best": best}
    (run_dir / "status.json").write_text(json.dumps(status))
    _history(run_dir, epochs)


@pytest.fixture(scope="module")
def pristine_lm_run(tmp_path_factory) -> Path:
    """An LM run folder: epoch_0001, epoch_0002, best (= epoch 1), last (= epoch 2), history, run.json."""
    tmp_path = tmp_path_factory.mktemp("lm_review")
    codec = make_codec_dir(tmp_path)
    source = make_lm_dir(tmp_path, codec)
    stored = ckpt.read_config(source)
    run_cfg = {**stored["config"], "generate": {"prompts": PROMPTS, "duration": 0.05, "top_k": 10, "seed": 3}}
    config = {"meta": {"task": "lm"}, "config": run_cfg}
    weights = ckpt.load_weights(source)
    run_dir = tmp_path / "runs" / "lm" / "abcd1234"
    _save(run_dir / "checkpoints" / "epoch_0001", weights, config, 1)
    torch.manual_seed(1)
    second = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()}
    _save(run_dir / "checkpoints" / "epoch_0002", second, config, 2)
    shutil.copytree(run_dir / "checkpoints" / "epoch_0001", run_dir / "checkpoints" / "best")
    shutil.copytree(run_dir / "checkpoints" / "epoch_0002", run_dir / "checkpoints" / "last")
    _run_files(run_dir, "lm", run_cfg, 2)
    return run_dir


@pytest.fixture()
def lm_run(pristine_lm_run, tmp_path) -> Path:
    """A fresh copy of the LM run for one test (the codec it names stays where it is)."""
    run_dir = tmp_path / "runs" / "lm" / pristine_lm_run.name
    shutil.copytree(pristine_lm_run, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory) -> Path:
    """A codec run (two checkpoints of the tiny 8 kHz codec) on a small prepared synthetic dataset."""
    from tunesmith.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("codec_review")
    data = root / "data"
    settings = {"sample_rate": 8000, "segment": 2.0, "min_segment": 1.0, "num_tracks": 6, "valid_fraction": 0.5}
    prepare_dataset([], data, source="synthetic", progress=False, **settings)
    codec = make_codec_dir(root)
    stored = ckpt.read_config(codec)
    run_cfg = {**stored["config"], "data": str(data), "check": {"num_samples": 2, "max_seconds": 1.0}}
    config = {"meta": {"task": "codec"}, "config": run_cfg}
    weights = ckpt.load_weights(codec)
    run_dir = root / "runs" / "codec" / "c0dec123"
    _save(run_dir / "checkpoints" / "epoch_0001", weights, config, 1)
    torch.manual_seed(2)
    second = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()}
    _save(run_dir / "checkpoints" / "last", second, config, 2)
    shutil.copytree(run_dir / "checkpoints" / "epoch_0001", run_dir / "checkpoints" / "best")
    _run_files(run_dir, "codec", run_cfg, 2)
    return run_dir


class _PageParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.audio: list[str] = []
        self.images: list[str] = []
        self.svgs = 0
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "audio":
            self.audio.append(a.get("src", ""))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "svg":
            self.svgs += 1
        for key in ("href", "src"):
            if key in a and tag not in ("audio", "img"):
                self.links.append(a[key])


def _parse(index: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(index.read_text())
    return parser


# --------------------------------------------------------------------------- LM runs


def test_lm_review_generates_each_sample_once_and_resumes(lm_run):
    from tunesmith.inference.lm import Generator

    result = review_run(lm_run)
    assert result.task == "lm" and result.checkpoints == ["epoch_0001", "epoch_0002", "best", "last"]
    # best has the weights of epoch 1 and last those of epoch 2: their samples are shared, not generated again
    assert (result.stats.generated, result.stats.reused, result.stats.existing) == (4, 4, 0)
    base = lm_run / "samples" / "review"
    names = sorted(p.name for p in (base / "epoch_0001").glob("*.wav"))
    assert len(names) == 2 and sorted(p.name for p in (base / "last").glob("*.wav")) == names
    for name in names:
        assert (base / "best" / name).read_bytes() == (base / "epoch_0001" / name).read_bytes()
        assert (base / "last" / name).read_bytes() == (base / "epoch_0002" / name).read_bytes()
        assert (base / "epoch_0001" / name).read_bytes() != (base / "epoch_0002" / name).read_bytes()
        assert (base / "epoch_0002" / name.replace(".wav", ".mel.png")).is_file()

    # the same item with the same seed, generated independently, gives the same audio
    import soundfile as sf

    prompts = [json.loads(line) for line in (base / "prompts.jsonl").read_text().splitlines()]
    assert [p["prompt"] for p in prompts] == PROMPTS
    first = sorted(names)[0]
    item = {"prompt": PROMPTS[0], "seed": 3, "duration": 0.05, "top_k": 10, "cfg": 3.0}
    expected = Generator.from_path(lm_run / "checkpoints" / "epoch_0001").generate([item])[0].wav
    written, _ = sf.read(base / "epoch_0001" / first, dtype="float32", always_2d=True)
    assert np.abs(written.T - np.clip(expected, -1, 1)).max() <= 1.0 / 32767 + 1e-6

    again = review_run(lm_run)
    assert (again.stats.generated, again.stats.reused, again.stats.existing) == (0, 0, 8)


def test_changed_last_is_regenerated_and_new_epochs_added(lm_run):
    review_run(lm_run)
    base = lm_run / "samples" / "review"
    old_last = {p.name: p.read_bytes() for p in (base / "last").glob("*.wav")}
    config = ckpt.read_config(lm_run / "checkpoints" / "last")
    weights = ckpt.load_weights(lm_run / "checkpoints" / "epoch_0002")
    torch.manual_seed(5)
    third = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()}
    _save(lm_run / "checkpoints" / "epoch_0003", third, config, 3)
    shutil.rmtree(lm_run / "checkpoints" / "last")
    shutil.copytree(lm_run / "checkpoints" / "epoch_0003", lm_run / "checkpoints" / "last")

    result = review_run(lm_run)
    assert result.checkpoints == ["epoch_0001", "epoch_0002", "epoch_0003", "best", "last"]
    assert (result.stats.generated, result.stats.reused, result.stats.existing) == (2, 2, 6)
    new_last = {p.name: p.read_bytes() for p in (base / "last").glob("*.wav")}
    assert new_last.keys() == old_last.keys() and all(new_last[k] != old_last[k] for k in new_last)
    assert json.loads((base / "last" / "source.json").read_text())["epoch"] == 3


def test_index_page_links_every_sample_relatively(lm_run):
    result = review_run(lm_run)
    page = _parse(result.index)
    text = result.index.read_text()
    assert len(page.audio) == 4 and len(page.images) == 4  # 2 prompts × 2 distinct checkpoints (best, last join)
    for src in page.audio + page.images:
        assert not src.startswith(("/", "http:", "https:", "file:")) and (result.index.parent / unquote(src)).is_file()
    assert "http" not in text and "<script" not in text  # offline and script-free
    assert page.svgs >= 4  # loss, per-codebook CE, lr, grad norm
    assert "optim.lr" in text and "bright fast melody" in text and "epoch 2" in text
    assert all(link.startswith("data:") for link in page.links)


def test_index_only_and_epoch_selection(lm_run):
    result = review_run(lm_run, epochs="2,best", index_only=True)
    assert result.checkpoints == ["epoch_0002", "best"] and result.stats.generated == 0
    assert "not generated yet" in result.index.read_text()
    assert not list((lm_run / "samples" / "review").glob("*/*.wav"))
    refs = list_checkpoints(lm_run)
    assert [r.name for r in select_checkpoints(refs, "last, 1")] == ["last", "epoch_0001"]
    for bad in ("7", "worst", " , "):
        with pytest.raises(UserError, match="--epochs"):
            select_checkpoints(refs, bad)


def test_prompts_file_replaces_stored_prompts_and_bad_lines_are_reported(lm_run, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "calm soft pad", "seed": 9}\n{"prompt": "x", "duration": -1}\nnoisy busy drums\n')
    result = review_run(lm_run, prompts=prompts, epochs="1")
    assert len(result.problems) == 1 and ":2:" in result.problems[0] and "duration" in result.problems[0]
    assert result.stats.generated == 2
    stored = (lm_run / "samples" / "review" / "prompts.jsonl").read_text()
    assert "calm soft pad" in stored and "noisy busy drums" in stored and "bright" not in stored
    again = review_run(lm_run, epochs="1")  # without --prompts: the stored ones again
    assert again.stats.existing == 2 and not again.problems


def test_corrupt_checkpoint_is_skipped_and_reported(lm_run, capsys):
    from tunesmith.cli import main

    weights = lm_run / "checkpoints" / "epoch_0002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    code = main(["review", str(lm_run), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["skipped_checkpoints"] == ["epoch_0002"]
    assert len(list((lm_run / "samples" / "review" / "last").glob("*.wav"))) == 2  # made from its own copy


def test_cli_list_epochs_and_errors(lm_run, capsys, tmp_path):
    from tunesmith.cli import main

    assert main(["review", str(lm_run), "--list-epochs"]) == 0
    listing = capsys.readouterr().out
    assert "epoch_0001" in listing and "last" in listing
    assert main(["review", str(lm_run), "--epochs", "9"]) == 2
    assert "no checkpoint '9'" in capsys.readouterr().err
    toy = tmp_path / "runs" / "toy" / "m1"
    (toy / "checkpoints").mkdir(parents=True)
    (toy / "run.json").write_text(json.dumps({"task": "toy", "config": {}}))
    assert main(["review", str(toy)]) == 2
    assert "lm, codec and midi" in capsys.readouterr().err
    assert main(["review", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path)]) == 2


# --------------------------------------------------------------------------- codec runs


def test_codec_review_puts_originals_beside_reconstructions(codec_run):
    result = review_run(codec_run)
    assert result.task == "codec" and result.checkpoints == ["epoch_0001", "best", "last"]
    assert (result.stats.generated, result.stats.reused) == (4, 2)  # best = epoch 1: its files are shared
    page = _parse(result.index)
    assert len(page.audio) == 2 * 3  # 2 clips × (original + epoch 1 (best) + epoch 2 (last))
    text = result.index.read_text()
    assert "original" in text and "SI-SNR" in text and " dB" in text
    report = json.loads((codec_run / "samples" / "review" / "last" / "report.json").read_text())
    assert len(report["clips"]) == 2 and all(np.isfinite(c["sisnr"]) for c in report["clips"])
    assert review_run(codec_run).stats.existing == 6


# --------------------------------------------------------------------------- rendering


def test_png_matches_an_independent_decoder():
    image_module = pytest.importorskip("PIL.Image")
    import io

    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (7, 13, 3), (128, 300, 3)]:
        rgb = rng.integers(0, 256, size=shape, dtype=np.uint8)
        decoded = np.asarray(image_module.open(io.BytesIO(png_bytes(rgb))).convert("RGB"))
        assert np.array_equal(decoded, rgb)
    with pytest.raises(ValueError):
        png_bytes(np.zeros((0, 4, 3), np.uint8))


def test_mel_image_puts_a_tone_in_its_band():
    librosa = pytest.importorskip("librosa")
    sr, n_mels = 16000, 64
    for freq in (300.0, 2500.0):
        t = np.arange(sr) / sr
        image = mel_image(0.5 * np.sin(2 * np.pi * freq * t)[None].astype(np.float32), sr, n_mels=n_mels)
        assert image.shape[0] == 2 * n_mels and image.dtype == np.uint8
        brightness = image.astype(float).sum(axis=2).mean(axis=1)[::2]  # one row per band, top = highest
        band = n_mels - 1 - int(np.argmax(brightness))
        centers = librosa.mel_frequencies(n_mels + 2, fmin=0.0, fmax=sr / 2, htk=True)[1:-1]
        assert abs(int(np.argmin(np.abs(centers - freq))) - band) <= 1
    long = mel_image(np.zeros((2, 16000 * 30), np.float32), 16000, max_width=500)
    assert long.shape[1] <= 500 and (long == colorize(np.zeros(1))[0]).all()  # silence: the bottom colour
    loud, quiet = (mel_image(a * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)[None], sr) for a in (1.0, 0.01))
    assert loud.astype(int).sum() > quiet.astype(int).sum()  # a fixed scale: quieter is darker
    top = {tuple(c) for c in colorize(np.linspace(0.97, 1.0, 61))}  # a full-scale sine peaks within 1 dB of the top
    assert top & {tuple(c) for c in loud.reshape(-1, 3)}
    assert mel_image(np.zeros(10, np.float32), 8000).shape[1] >= 1  # shorter than one FFT


def test_history_charts_and_svg():
    root = Path(tempfile.mkdtemp())
    _history(root, 3)
    history = read_history(root / "history.jsonl")
    assert len(history) == 3 * (4 + 2)  # the cut line is skipped
    charts = history_charts(history)
    titles = [c.title for c in charts]
    assert titles[:2] == ["loss", "valid CE per codebook"] and "learning rate" in titles and "ppl" not in titles
    loss = charts[0]
    assert [s.label for s in loss.series] == ["train (per update)", "train (epoch)", "valid"]
    assert loss.series[2].points == [(10.0, 4.5), (20.0, 2.25), (30.0, 1.5)]
    svg = ET.fromstring(svg_chart(loss))
    assert len(svg.findall("polyline")) == 3
    single = ET.fromstring(svg_chart(Chart("x", [Series("a", [(1.0, 2.0)])])))
    assert len(single.findall("circle")) == 1 and not single.findall("polyline")
    shutil.rmtree(root)


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (0.013, 0.094), (-3.0, 1250.0), (5.0, 5.0001), (1.9, 4.1)])
def test_nice_ticks(low, high):
    ticks = nice_ticks(low, high)
    assert 2 <= len(ticks) <= 11 and all(low - 1e-12 <= t <= high + 1e-12 for t in ticks)
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
    whole = nice_ticks(low, high, integer=True)
    assert all(float(t).is_integer() for t in whole) and all(low <= t <= high for t in whole)


# --------------------------------------------------------------------------- in a real browser

_CHECK_MEDIA = """
const done = arguments[arguments.length - 1];
const audios = Array.from(document.querySelectorAll('audio'));
const waits = audios.map(a => new Promise(resolve => {
  const report = () => resolve({src: a.currentSrc, duration: a.duration, error: a.error ? a.error.code : null});
  if (a.readyState >= 1 || a.error) { report(); return; }
  a.addEventListener('loadedmetadata', report, {once: true});
  a.addEventListener('error', report, {once: true});
  a.load();
}));
const images = Array.from(document.images).map(i => i.decode().then(
  () => ({src: i.currentSrc, width: i.naturalWidth}), () => ({src: i.currentSrc, width: 0})));
Promise.all([Promise.all(waits), Promise.all(images)]).then(([a, i]) => done({audio: a, images: i}));
"""


@pytest.mark.slow
def test_pages_in_headless_chromium(lm_run, codec_run):
    pages = [review_run(lm_run).index, review_run(codec_run).index]
    driver, profile = headless_chromium()
    try:
        driver.set_script_timeout(60)
        for index in pages:
            driver.get(index.as_uri())
            assert "tunesmith review" in driver.title
            found = driver.execute_async_script(_CHECK_MEDIA)
            assert found["audio"] and found["images"]
            for audio in found["audio"]:
                assert audio["error"] is None and audio["src"].startswith("file:"), audio
                assert audio["duration"] > 0, audio
            for image in found["images"]:
                assert image["width"] > 0, image
            severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert not severe, severe
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_review_command_runs_as_a_subprocess(lm_run):
    env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "review", str(lm_run), "--epochs", "best", "--duration", "0.03"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "review page:" in proc.stdout and (lm_run / "samples" / "index.html").is_file()


# --------------------------------------------------------------------------- one source of generation defaults


def test_generate_serve_and_review_give_the_same_audio(lm_run, tmp_path, capsys, monkeypatch):
    """The run stores generate = {duration 0.05, top_k 10, seed 3}: every command starts from it (not from the
    family's 10 s / top-k 250), so the same prompt and seed give the same samples everywhere."""
    import soundfile as sf

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.cli import main
    from tunesmith.inference.lm import Generator
    from tunesmith.serve.app import build_app
    from tunesmith.serve.queue import Limits

    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "one.txt"  # one prompt: a batch of one everywhere (batch size changes float rounding)
    prompts.write_text(PROMPTS[0] + "\n")
    result = review_run(lm_run, epochs="best", prompts=prompts)
    first = result.index.parent / "review" / "best"
    (reviewed,) = [p for p in first.glob("*.wav") if "bright-fast-melody" in p.name]
    assert main(["generate", str(lm_run), "--checkpoint", "best", "--prompt", PROMPTS[0], "--out", "gen"]) == 0
    err = capsys.readouterr().err
    assert "settings: duration=0.05 s cfg=3 temperature=1 top_k=10 top_p=0 seed=3 (from the run's generate" in err
    (generated,) = (tmp_path / "gen").glob("*.wav")
    generator = Generator.from_path(lm_run / "checkpoints" / "best")
    with TestClient(build_app(generator, Limits())) as client:
        served = client.post("/v1/generate", json={"prompt": PROMPTS[0], "seed": 3})
    assert served.status_code == 200 and served.headers["x-audio-seconds"] == "0.0500"
    samples = [sf.read(path, dtype="int16")[0] for path in (reviewed, generated)]
    samples.append(sf.read(io.BytesIO(served.content), dtype="int16")[0])
    assert samples[0].shape == (400,)  # 0.05 s at 8 kHz, the run's duration
    for other in samples[1:]:
        np.testing.assert_array_equal(other, samples[0])
