"""`tunesmith review RUN`: the same prompts and seeds at every checkpoint, on one offline HTML page.

For an LM run, every selected checkpoint (numbered ``epoch_NNNN``, ``best``, ``last``) generates the
same prompt items with the same seeds into ``RUN/samples/review/<checkpoint>/<item id>.wav``; for a
codec run, every checkpoint reconstructs the same fixed valid clips (originals beside reconstructions,
with SI-SNR). Each wav gets a mel-spectrogram PNG, and ``RUN/samples/index.html`` shows the grid
(prompts × checkpoints, each cell an ``<audio>`` player and its spectrogram), the loss/metric curves
of ``history.jsonl`` as inline SVG and the run's config delta. The page is self-contained and works
offline: relative links only, styles inlined, no script.

Resumable and incremental: a sample whose file exists is not generated again. Each checkpoint folder
records the sha256 of the weights it was made with (``source.json``); when ``last`` (or a re-saved
``best``) has new weights its stale samples are replaced, and checkpoints with identical weights (``best``
and the numbered checkpoint it was copied from) share files instead of generating twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import logging
import math
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.review")

REVIEW_DIR = "review"  # RUN/samples/review/<checkpoint>/
INDEX = "index.html"
PROMPTS_FILE = "prompts.jsonl"
SOURCE_FILE = "source.json"
MEL_SUFFIX = ".mel.png"
DEFAULT_NUM_PROMPTS = 4
MAX_CHARTS = 12


# =========================================================================== images: mel spectrogram → PNG

# A dark-to-bright perceptual ramp (position, RGB); values in between are interpolated linearly.
_RAMP: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.00, (0, 0, 4)),
    (0.15, (28, 16, 68)),
    (0.30, (79, 18, 123)),
    (0.45, (129, 37, 129)),
    (0.60, (181, 54, 122)),
    (0.75, (229, 80, 100)),
    (0.87, (251, 135, 97)),
    (1.00, (252, 253, 191)),
)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape ``S``) → uint8 RGB ``S + (3,)`` along the ramp; out-of-range values are clipped."""
    stops = np.array([p for p, _ in _RAMP])
    colors = np.array([c for _, c in _RAMP], dtype=np.float64)
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0)
    rgb = np.stack([np.interp(v, stops, colors[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` uint8 ``[H, W, 3]`` (no filtering, zlib level 6)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected a non-empty [H, W, 3] image, got shape {rgb.shape}")
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # each row: filter type 0, then the pixels
    rows[:, 1:] = rgb.reshape(height, 3 * width)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, deflate, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def mel_image(
    wav: np.ndarray, sample_rate: int, *, n_mels: int = 64, max_width: int = 800, top_db: float = 80.0
) -> np.ndarray:
    """Audio float ``[C, T]`` (or ``[T]``) → log-mel spectrogram image uint8 ``[2 * n_mels, W, 3]``.

    Channels are averaged; FFT size ≈ 64 ms (a power of two), hop a quarter of it. Power is in dB on a fixed
    scale, so that images of different clips compare: the top colour is a full-scale sine's peak band, the
    bottom ``top_db`` below it. Low frequencies at the bottom. ``W`` is the number of frames, max-pooled
    down to at most ``max_width`` columns.
    """
    import torch

    from tunesmith.audio.mel import MelSpectrogram

    x = np.asarray(wav, dtype=np.float32)
    x = x.mean(axis=0) if x.ndim == 2 else x.reshape(-1)
    n_fft = 2 ** max(8, round(math.log2(sample_rate * 0.064)))
    if x.shape[0] <= n_fft:
        x = np.pad(x, (0, n_fft + 1 - x.shape[0]))
    mel = MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)
    with torch.no_grad():
        power = mel(torch.from_numpy(np.ascontiguousarray(x))).double().numpy()  # [n_mels, frames]
    db = 10.0 * np.log10(np.maximum(power, 1e-20))
    full_scale_db = 20.0 * math.log10(n_fft / 4)  # |Hann-windowed DFT|² of a unit sine at its bin: (n_fft / 4)²
    level = (db - (full_scale_db - top_db)) / top_db
    frames = level.shape[1]
    if frames > max_width:  # max-pool groups of columns so that short events stay visible
        group = math.ceil(frames / max_width)
        padded = np.pad(level, ((0, 0), (0, group * math.ceil(frames / group) - frames)), constant_values=-np.inf)
        level = padded.reshape(n_mels, -1, group).max(axis=2)
    image = np.repeat(level[::-1], 2, axis=0)  # high frequencies on top, two pixel rows per band
    return colorize(image)


def write_mel_png(wav_path: Path, png_path: Path) -> None:
    """Render the spectrogram of audio file ``wav_path`` into ``png_path`` (atomically)."""
    from tunesmith.audio.io import atomic_path, load_audio

    wav, sample_rate = load_audio(wav_path)
    data = png_bytes(mel_image(wav, sample_rate))
    with atomic_path(png_path) as tmp:
        tmp.write_bytes(data)


def ensure_mel_png(wav_path: Path) -> Path | None:
    """The spectrogram PNG beside ``wav_path`` (rendered when missing or older); None when the audio is unreadable."""
    png = wav_path.with_name(wav_path.stem + MEL_SUFFIX)
    if png.is_file() and png.stat().st_mtime_ns >= wav_path.stat().st_mtime_ns:
        return png
    try:
        write_mel_png(wav_path, png)
    except (UserError, ValueError, RuntimeError) as err:
        log.warning("no spectrogram for %s: %s", wav_path, err)
        return None
    return png


# =========================================================================== curves: history.jsonl → SVG


@dataclasses.dataclass
class Series:
    """A named line of ``points`` (x = optimizer step, y = metric value)."""

    label: str
    points: list[tuple[float, float]]


@dataclasses.dataclass
class Chart:
    title: str
    series: list[Series]


PALETTE = ("#3b5bdb", "#e8590c", "#2f9e44", "#c2255c", "#7048e8", "#0c8599", "#e67700", "#495057")
_PER_CODEBOOK = re.compile(r"^(ce|ppl)_q(\d+)$")
_NOT_METRICS = frozenset({"stage", "epoch", "step", "time"})
_STAGE_LABELS = {"train_step": "train (per update)", "train": "train (epoch)", "valid": "valid", "evaluate": "evaluate"}


def read_history(path: Path) -> list[dict]:
    """The records of a run's ``history.jsonl``; lines that are not JSON objects (a killed write) are skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


def _metric_points(history: list[dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """metric → stage → [(step, value)] for every finite numeric value."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for record in history:
        stage = str(record.get("stage", ""))
        for key, value in record.items():
            if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                out.setdefault(key, {}).setdefault(stage, []).append((float(record["step"]), float(value)))
    return out


def history_charts(history: list[dict], limit: int = MAX_CHARTS) -> list[Chart]:
    """Charts worth a look: loss (train per update, train per epoch, valid), per-codebook valid CE, every other
    valid/evaluate metric, then learning rate and gradient norm."""
    points = _metric_points(history)
    charts: list[Chart] = []

    def stage_series(metric: str, stages: Iterable[str]) -> list[Series]:
        found = points.get(metric, {})
        return [Series(_STAGE_LABELS.get(s, s), found[s]) for s in stages if found.get(s)]

    loss = stage_series("loss", ("train_step", "train", "valid", "evaluate"))
    if loss:
        charts.append(Chart("loss", loss))
    codebooks = sorted(
        (int(m.group(2)), key)
        for key in points
        if (m := _PER_CODEBOOK.match(key)) and m.group(1) == "ce" and points[key].get("valid")
    )
    if codebooks:
        charts.append(Chart("valid CE per codebook", [Series(f"q{i}", points[key]["valid"]) for i, key in codebooks]))
    others = sorted(
        key
        for key, stages in points.items()
        if key != "loss" and not _PER_CODEBOOK.match(key) and ("valid" in stages or "evaluate" in stages)
    )
    for key in others:
        charts.append(Chart(key, stage_series(key, ("train", "valid", "evaluate"))))
    for key in ("lr", "grad_norm"):
        series = stage_series(key, ("train_step",))
        if series:
            charts.append(Chart("learning rate" if key == "lr" else "gradient norm", series))
    return charts[:limit]


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 × 10^k apart) within [low, high]; whole numbers only
    when ``integer`` (steps, epochs)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw)
    if integer:
        step = float(max(1, math.ceil(step)))
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def svg_chart(chart: Chart, width: int = 380, height: int = 220) -> str:
    """An inline SVG line chart: axes with round ticks, one coloured line (and dots) per series, a legend."""
    left, right, top, bottom = 56, 12, 30, 28
    xs = [x for s in chart.series for x, _ in s.points]
    ys = [y for s in chart.series for _, y in s.points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.06
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(chart.title)}" font-family="system-ui, sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#ccc"/>',
    ]
    for tick in nice_ticks(y0, y1):
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt(tick)}</text>')
    for tick in nice_ticks(x0, x1, integer=True):
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#999"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#555">{_fmt(tick)}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 1}" text-anchor="end" fill="#888" font-size="10">step</text>')
    legend_x = left
    for i, series in enumerate(chart.series):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in series.points)
        if len(series.points) > 1:
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        if len(series.points) <= 40:
            parts.extend(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4" fill="{color}"/>' for x, y in series.points
            )
        label = html.escape(series.label)
        parts.append(f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="17" fill="#333">{label}</text>')
        legend_x += 22 + 6 * len(series.label)
    parts.append("</svg>")
    return "".join(parts)


# =========================================================================== checkpoints


@dataclasses.dataclass
class CheckpointRef:
    """A checkpoint of a run: ``name`` (epoch_NNNN, best, last), its folder, epoch/step and weights hash."""

    name: str
    folder: Path
    epoch: int | None
    step: int | None
    weights_sha256: str

    @property
    def label(self) -> str:
        if self.name.startswith("epoch_") and self.epoch is not None:
            return f"epoch {self.epoch}"
        return f"{self.name} · epoch {self.epoch}" if self.epoch is not None else self.name


_NUMBERED = re.compile(r"^epoch_(\d+)$")


def _checkpoint_ref(folder: Path) -> CheckpointRef | None:
    from tunesmith.engine.checkpoint import MANIFEST, sha256_file

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("skipping %s: unreadable %s", folder, MANIFEST)
        return None
    weights = files.get("model_ema.safetensors") or files.get("model.safetensors") or {}
    sha = weights.get("sha256") if isinstance(weights, dict) else None
    epoch, step = manifest.get("epoch"), manifest.get("step")
    match = _NUMBERED.match(folder.name)
    if epoch is None and match:
        epoch = int(match.group(1))
    return CheckpointRef(
        folder.name,
        folder,
        int(epoch) if isinstance(epoch, (int, float)) else None,
        int(step) if isinstance(step, (int, float)) else None,
        str(sha or sha256_file(folder / MANIFEST)),
    )


def list_checkpoints(run_dir: Path) -> list[CheckpointRef]:
    """A run's checkpoints: numbered ones by epoch, then ``best``, then ``last`` (others after the numbered)."""
    from tunesmith.engine.checkpoint import MANIFEST

    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    refs = []
    for path in folder.iterdir():
        hidden = path.name.startswith(".") or path.name.endswith(".prev")
        if path.is_dir() and not hidden and (path / MANIFEST).is_file():
            ref = _checkpoint_ref(path)
            if ref is not None:
                refs.append(ref)

    def order(ref: CheckpointRef) -> tuple:
        if _NUMBERED.match(ref.name):
            return (0, ref.epoch or 0, ref.name)
        return ({"best": 2, "last": 3}.get(ref.name, 1), 0, ref.name)

    return sorted(refs, key=order)


def select_checkpoints(refs: list[CheckpointRef], spec: str) -> list[CheckpointRef]:
    """``spec``: ``all`` or a comma list of epoch numbers and/or ``best``/``last`` (e.g. ``2,5,best``)."""
    if spec.strip().lower() == "all":
        return list(refs)
    available = ", ".join(r.name for r in refs) or "none"
    chosen: list[CheckpointRef] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token.isdigit():
            matches = [r for r in refs if _NUMBERED.match(r.name) and r.epoch == int(token)]
        else:
            matches = [r for r in refs if r.name == token]
        if not matches:
            raise UserError(
                f"--epochs {spec}: no checkpoint {token!r} in this run (available: {available}); "
                "numbered checkpoints are kept per train.checkpoint.keep_last; "
                "see `tunesmith review RUN --list-epochs`"
            )
        chosen.extend(m for m in matches if m not in chosen)
    if not chosen:
        raise UserError(f"--epochs {spec!r}: give 'all' or a comma list such as 2,5,best")
    return chosen


def _weights_changed(folder: Path, ref: CheckpointRef) -> bool:
    try:
        recorded = json.loads((folder / SOURCE_FILE).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return True
    return recorded != ref.weights_sha256


def prepare_output(folder: Path, ref: CheckpointRef) -> None:
    """Make ``folder`` hold samples of ``ref``'s current weights: stale files (other weights) are removed first."""
    from tunesmith.audio.io import write_atomic_text

    if folder.is_dir() and not _weights_changed(folder, ref):
        return
    if folder.is_dir():
        log.info("%s: the checkpoint's weights changed since its samples were made; making them again", ref.name)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = {"checkpoint": ref.name, "epoch": ref.epoch, "step": ref.step, "weights_sha256": ref.weights_sha256}
    write_atomic_text(folder / SOURCE_FILE, json.dumps(source, indent=2) + "\n")


def _twin_file(base: Path, ref: CheckpointRef, refs: list[CheckpointRef], name: str) -> Path | None:
    """The same file made by another checkpoint with identical weights, if any."""
    for other in refs:
        if other.name == ref.name or other.weights_sha256 != ref.weights_sha256:
            continue
        candidate = base / other.name / name
        if candidate.is_file() and not _weights_changed(base / other.name, other):
            return candidate
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


# =========================================================================== the grid


@dataclasses.dataclass
class Cell:
    """One sample on the page: paths relative to ``RUN/samples`` (None = not made), and a metric line."""

    audio: str | None = None
    image: str | None = None
    note: str = ""


@dataclasses.dataclass
class Grid:
    """Rows (prompts or clips) × columns (checkpoints, after an optional ``original`` column)."""

    row_titles: list[str]
    row_details: list[str]
    columns: list[str]
    column_details: list[str]
    cells: list[list[Cell]]  # [row][column]


def _rel(samples_dir: Path, path: Path) -> str:
    return "/".join(quote(part) for part in path.relative_to(samples_dir).parts)


def _cell_for(samples_dir: Path, wav: Path, note: str = "") -> Cell:
    if not wav.is_file():
        return Cell(note="not generated yet")
    png = wav.with_name(wav.stem + MEL_SUFFIX)
    return Cell(_rel(samples_dir, wav), _rel(samples_dir, png) if png.is_file() else None, note)


# =========================================================================== LM runs


def _config_section(config: dict, *keys: str) -> dict:
    node: Any = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def resolve_relative(value: str, run_dir: Path) -> Path | None:
    """A path recorded in a run config: absolute, or relative to the working directory or a parent of the run."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    for base in (Path.cwd(), run_dir, *run_dir.parents):
        if (base / path).exists():
            return base / path
    return None


def default_prompt_lines(config: dict, run_dir: Path, count: int) -> list[dict]:
    """Prompt lines for a first review: ``generate.prompts`` of the run config, else distinct texts (with the
    model's attributes) from the dataset's valid then train split, else unconditional items with seeds 0..n-1."""
    cond = _config_section(config, "model", "conditioner")
    text_field = str(cond.get("text_field") or "description")
    attributes = [str(a) for a in cond.get("attributes") or []]
    if cond.get("text", "builtin") == "none" and not attributes:
        return [{"prompt": "", "seed": i} for i in range(count)]
    configured = _config_section(config, "generate").get("prompts") or []
    if configured:
        return [{"prompt": str(p)} for p in configured[:count]]
    lines: list[dict] = []
    data = resolve_relative(str(config.get("data") or ""), run_dir) if config.get("data") else None
    if data is not None:
        from tunesmith.data.manifest import manifest_path, read_info, read_manifest

        for split in ("valid", "train"):
            if len(lines) >= count or not manifest_path(data, split).is_file():
                continue
            try:
                entries = read_manifest(data, split)
            except UserError as err:
                log.warning("cannot read the %s prompts of %s: %s", split, data, err)
                continue
            for entry in entries[: 50 * count]:
                try:
                    info = read_info(data, entry)
                except UserError:
                    continue
                text = str(info.get(text_field) or "")
                line = {"prompt": text, **{a: info[a] for a in attributes if info.get(a) not in (None, "", [])}}
                if text and line not in lines:
                    lines.append(line)
                if len(lines) >= count:
                    break
    if not lines:
        log.warning("no prompts found in the run config or its dataset; reviewing unconditional samples")
        return [{"prompt": "", "seed": i} for i in range(count)]
    return lines[:count]


def review_prompts(
    run_dir: Path, config: dict, prompts_file: Path | None, defaults: dict[str, Any], count: int
) -> tuple[list[Any], list[str]]:
    """The review's fixed prompt items (generate_cli Jobs) and the problems of skipped lines.

    They live in ``RUN/samples/review/prompts.jsonl``: written from ``prompts_file`` when given, else from
    the run's defaults the first time; later reviews reuse it, so every checkpoint hears the same prompts.
    """
    from tunesmith.audio.io import write_atomic_text
    from tunesmith.generate_cli import read_prompts

    stored = run_dir / "samples" / REVIEW_DIR / PROMPTS_FILE
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise UserError(f"--prompts {prompts_file}: no such file (JSON lines or one prompt per line)")
        jobs, problems = read_prompts([], prompts_file, defaults)
        if not jobs:
            raise UserError(f"{prompts_file}: no usable prompt line" + ("".join(f"\n  {p}" for p in problems)))
        lines = [job.fields for job in jobs]
    elif stored.is_file():
        return read_prompts([], stored, defaults)
    else:
        lines, problems = default_prompt_lines(config, run_dir, count), []
    stored.parent.mkdir(parents=True, exist_ok=True)
    write_atomic_text(stored, "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines))
    jobs, more = read_prompts([], stored, defaults)
    return jobs, problems + more


def generation_defaults(config: dict, duration: float | None) -> dict[str, Any]:
    """Item settings from the run's ``generate`` section (duration overridden by ``duration`` when given)."""
    g = _config_section(config, "generate")
    return {
        "duration": float(duration if duration is not None else g.get("duration") or 5.0),
        "cfg": float(g.get("cfg", 3.0)),
        "temperature": float(g.get("temperature", 1.0)),
        "top_k": int(g.get("top_k", 250)),
        "top_p": float(g.get("top_p", 0.0)),
        "seed": int(g.get("seed", 0)),
    }


@dataclasses.dataclass
class ReviewStats:
    generated: int = 0  # samples made now
    reused: int = 0  # linked from a checkpoint with identical weights
    existing: int = 0  # already there
    skipped_checkpoints: list[str] = dataclasses.field(default_factory=list)  # unusable (reported)


def generate_lm_samples(
    run_dir: Path, refs: list[CheckpointRef], jobs: list[Any], device: str, stats: ReviewStats
) -> None:
    """Every job's wav (and spectrogram) for every checkpoint in ``refs``, skipping what exists."""
    from tunesmith.audio.io import save_audio
    from tunesmith.generate import Generator

    base = run_dir / "samples" / REVIEW_DIR
    for ref in refs:
        folder = base / ref.name
        prepare_output(folder, ref)
        todo = []
        for job in jobs:
            target = folder / f"{job.id}.wav"
            if target.is_file():
                stats.existing += 1
            elif (twin := _twin_file(base, ref, refs, target.name)) is not None:
                _link_or_copy(twin, target)
                stats.reused += 1
            else:
                todo.append(job)
        if todo:
            try:
                generator = Generator.from_path(ref.folder, device=device)
            except UserError as err:
                log.warning("skipping checkpoint %s: %s", ref.name, err)
                stats.skipped_checkpoints.append(ref.name)
                continue
            log.info("%s: generating %d samples", ref.label, len(todo))
            for start in range(0, len(todo), generator.max_batch):
                chunk = todo[start : start + generator.max_batch]
                for job, result in zip(chunk, generator.generate([j.item for j in chunk]), strict=True):
                    save_audio(folder / f"{job.id}.wav", result.wav, result.sample_rate)
                    stats.generated += 1
            del generator
        for job in jobs:
            wav = folder / f"{job.id}.wav"
            if wav.is_file():
                ensure_mel_png(wav)


def lm_grid(run_dir: Path, refs: list[CheckpointRef], jobs: list[Any]) -> Grid:
    samples = run_dir / "samples"
    titles, details, cells = [], [], []
    for job in jobs:
        item = job.item
        extra = ", ".join(f"{k}={v}" for k, v in item.conditions.items())
        titles.append(item.prompt or "(unconditional)")
        details.append(
            f"seed {item.seed} · {item.duration:g} s · cfg {item.cfg:g} · top-k {item.top_k}"
            + (f" · top-p {item.top_p:g}" if item.top_p else "")
            + (f" · {extra}" if extra else "")
        )
        cells.append([_cell_for(samples, samples / REVIEW_DIR / ref.name / f"{job.id}.wav") for ref in refs])
    return Grid(titles, details, [r.label for r in refs], [_step_note(r) for r in refs], cells)


def _step_note(ref: CheckpointRef) -> str:
    return f"step {ref.step}" if ref.step is not None else ""


# =========================================================================== codec runs


def codec_clips(config: dict, run_dir: Path, data: Path | None, num_clips: int | None) -> list[Any]:
    """The fixed valid clips a codec run is reviewed on (``check`` section of its config)."""
    from tunesmith.checks.codec import select_clips

    model = _config_section(config, "model")
    check = _config_section(config, "check")
    if data is None:
        recorded = str(config.get("data") or "")
        data = resolve_relative(recorded, run_dir) if recorded else None
        if data is None:
            raise UserError(
                f"{run_dir}: cannot find the dataset this codec was trained on (config says data={recorded!r}); "
                "pass --data DIR"
            )
    count = num_clips or int(check.get("num_samples") or 4)
    return select_clips(
        data,
        count,
        int(model.get("sample_rate") or 32000),
        int(model.get("channels") or 1),
        "valid",
        float(check.get("max_seconds") or 10.0),
    )


def reconstruct_codec_samples(
    run_dir: Path,
    refs: list[CheckpointRef],
    config: dict,
    data: Path | None,
    num_clips: int | None,
    device: str,
    stats: ReviewStats,
) -> None:
    """Original/reconstruction pairs and ``report.json`` (with SI-SNR) for every checkpoint, skipping what exists."""
    from tunesmith.checks.codec import check_codec
    from tunesmith.models.codec import load_codec

    base = run_dir / "samples" / REVIEW_DIR
    clips = None
    for ref in refs:
        folder = base / ref.name
        prepare_output(folder, ref)
        if (folder / "report.json").is_file():
            stats.existing += len(_codec_report(folder))
        elif (twin := _twin_file(base, ref, refs, "report.json")) is not None:
            for path in sorted(twin.parent.iterdir()):  # the report last: it marks the folder complete
                if path.suffix == ".wav":
                    _link_or_copy(path, folder / path.name)
            _link_or_copy(twin, folder / "report.json")
            stats.reused += len(_codec_report(folder))
        else:
            if clips is None:
                clips = codec_clips(config, run_dir, data, num_clips)
            try:
                codec = load_codec(ref.folder, device=device)
            except UserError as err:
                log.warning("skipping checkpoint %s: %s", ref.name, err)
                stats.skipped_checkpoints.append(ref.name)
                continue
            log.info("%s: reconstructing %d clips", ref.label, len(clips))
            check_codec(codec, clips, folder, device=device)
            stats.generated += len(clips)
        for wav in sorted(folder.glob("*.wav")):
            ensure_mel_png(wav)


def _codec_report(folder: Path) -> list[dict]:
    try:
        clips = json.loads((folder / "report.json").read_text())["clips"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [c for c in clips if isinstance(c, dict) and c.get("name")]


def codec_grid(run_dir: Path, refs: list[CheckpointRef]) -> Grid:
    samples = run_dir / "samples"
    base = samples / REVIEW_DIR
    reports = {ref.name: {c["name"]: c for c in _codec_report(base / ref.name)} for ref in refs}
    names: list[str] = []
    for ref in refs:
        names.extend(n for n in reports[ref.name] if n not in names)
    titles, details, cells = [], [], []
    for name in names:
        first = next(ref for ref in refs if name in reports[ref.name])
        clip = reports[first.name][name]
        titles.append(name)
        details.append(f"{float(clip.get('seconds', 0)):.2f} s")
        row = [_cell_for(samples, base / first.name / str(clip.get("original") or ""), "original")]
        for ref in refs:
            c = reports[ref.name].get(name)
            if c is None:
                row.append(Cell(note="not reconstructed yet"))
                continue
            note = f"SI-SNR {float(c['sisnr']):.2f} dB · mel {float(c['mel']):.3f}"
            row.append(_cell_for(samples, base / ref.name / str(c.get("reconstructed") or ""), note))
        cells.append(row)
    return Grid(
        titles, details, ["original"] + [r.label for r in refs], ["dataset clip"] + [_step_note(r) for r in refs], cells
    )


# =========================================================================== the page


def _css() -> str:
    return resources.files("tunesmith").joinpath("review_assets/review.css").read_text(encoding="utf-8")


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def render_page(run_dir: Path, task: str, grid: Grid, charts: list[Chart]) -> str:
    """The review page (HTML text) for ``run_dir``: summary, config delta, curves, sample grid."""
    from tunesmith import __version__
    from tunesmith.xp import RUN_FILE, STATUS_FILE, read_json

    meta = read_json(run_dir / RUN_FILE) or {}
    status = read_json(run_dir / STATUS_FILE) or {}
    best = status.get("best") or {}
    best_text = (
        f"{best.get('metric')} = {float(best['value']):.4g} at epoch {best.get('epoch')}"
        if isinstance(best, dict) and isinstance(best.get("value"), (int, float))
        else "—"
    )
    summary = _kv_table(
        [
            ("run folder", f"<code>{html.escape(str(run_dir))}</code>"),
            ("task / preset", html.escape(f"{task} / {meta.get('preset', '?')}")),
            ("signature", f"<code>{html.escape(str(meta.get('signature', '?')))}</code>"),
            (
                "status",
                html.escape(
                    f"{status.get('state', '?')}, epoch {status.get('epoch', 0)}, step {status.get('step', 0)}"
                ),
            ),  # fmt: skip
            ("best", html.escape(best_text)),
            ("created", html.escape(str(meta.get("created_at", "?")))),
        ]
    )
    delta = meta.get("delta") or {}
    delta_html = (
        _kv_table(
            [(k, f"<code>{html.escape(json.dumps(v, ensure_ascii=False))}</code>") for k, v in sorted(delta.items())]
        )
        if delta
        else '<p class="muted">none: the preset as shipped</p>'
    )
    charts_html = (
        '<div class="charts">'
        + "".join(
            f'<figure class="chart"><figcaption>{html.escape(c.title)}</figcaption>{svg_chart(c)}</figure>'
            for c in charts
        )
        + "</div>"
        if charts
        else '<p class="muted">no history yet</p>'
    )
    head = "".join(
        f"<th>{html.escape(label)}<div class='muted'>{html.escape(detail)}</div></th>"
        for label, detail in zip(grid.columns, grid.column_details, strict=True)
    )
    rows = []
    for title, detail, cells in zip(grid.row_titles, grid.row_details, grid.cells, strict=True):
        tds = "".join(_cell_html(cell, title) for cell in cells)
        rows.append(
            f'<tr><td class="prompt">{html.escape(title)}<div class="muted">{html.escape(detail)}</div></td>{tds}</tr>'
        )
    row_head = "prompt" if task == "lm" else "clip"
    grid_html = (
        f'<div class="grid-wrap"><table class="grid"><thead><tr><th>{row_head}</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        if grid.cells and grid.columns
        else '<p class="muted">no checkpoints with samples yet</p>'
    )
    what = (
        "The same prompts with the same seeds at every checkpoint."
        if task == "lm"
        else "The same dataset clips through every checkpoint: originals beside reconstructions."
    )
    title = f"tunesmith review · {task} {meta.get('signature', run_dir.name)}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>
{_css()}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">{html.escape(what)}</p>
<h2>Run</h2>
{summary}
<h2>Config delta (vs. preset)</h2>
{delta_html}
<h2>Curves</h2>
{charts_html}
<h2>Samples</h2>
{grid_html}
<footer>Made by tunesmith {html.escape(__version__)}. Update with
<code>tunesmith review {html.escape(str(run_dir))}</code>; files are under <code>samples/{REVIEW_DIR}/</code>.</footer>
</body>
</html>
"""


def _cell_html(cell: Cell, title: str) -> str:
    if cell.audio is None:
        return f'<td><div class="cell missing">{html.escape(cell.note)}</div></td>'
    label = html.escape(title)
    image = f'<img src="{html.escape(cell.image)}" alt="mel spectrogram: {label}">' if cell.image else ""
    note = f'<div class="metric">{html.escape(cell.note)}</div>' if cell.note else ""
    return (
        f'<td><div class="cell"><audio controls preload="metadata" src="{html.escape(cell.audio)}"></audio>'
        f"{image}{note}</div></td>"
    )


# =========================================================================== orchestration


@dataclasses.dataclass
class ReviewResult:
    index: Path
    task: str
    checkpoints: list[str]
    stats: ReviewStats
    problems: list[str]  # skipped prompt lines


def run_task(run_dir: Path) -> tuple[str, dict]:
    """(task, resolved config) of a run folder, from run.json or a checkpoint's config.json."""
    from tunesmith.xp import RUN_FILE, read_json

    meta = read_json(run_dir / RUN_FILE)
    if meta and isinstance(meta.get("config"), dict):
        return str(meta.get("task")), meta["config"]
    for ref in list_checkpoints(run_dir):
        try:
            stored = json.loads((ref.folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        task = (stored.get("meta") or {}).get("task")
        if task and isinstance(stored.get("config"), dict):
            return str(task), stored["config"]
    raise UserError(f"{run_dir}: not a run folder ({RUN_FILE} and checkpoints are missing); see `tunesmith runs list`")


def review_run(
    run_dir: str | Path,
    *,
    epochs: str = "all",
    prompts: Path | None = None,
    index_only: bool = False,
    duration: float | None = None,
    num_prompts: int | None = None,
    data: Path | None = None,
    device: str = "cpu",
) -> ReviewResult:
    """Make the missing samples of the selected checkpoints (unless ``index_only``) and write ``samples/index.html``."""
    from tunesmith.audio.io import write_atomic_text

    run_dir = Path(run_dir)
    task, config = run_task(run_dir)
    if task not in ("lm", "codec"):
        raise UserError(f"{run_dir}: review handles lm and codec runs; this is a {task!r} run")
    if num_prompts is not None and num_prompts < 1:
        raise UserError(f"--num-prompts={num_prompts}: must be at least 1")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise UserError(f"--duration={duration}: must be a positive number of seconds")
    refs = select_checkpoints(list_checkpoints(run_dir), epochs)
    stats = ReviewStats()
    problems: list[str] = []
    if task == "lm":
        defaults = generation_defaults(config, duration)
        jobs, problems = review_prompts(run_dir, config, prompts, defaults, num_prompts or DEFAULT_NUM_PROMPTS)
        for problem in problems:
            log.warning("skipped %s", problem)
        if not index_only:
            generate_lm_samples(run_dir, refs, jobs, device, stats)
        grid = lm_grid(run_dir, refs, jobs)
    else:
        if prompts is not None:
            raise UserError("--prompts is for LM runs; a codec run is reviewed on fixed dataset clips (see --data)")
        if not index_only:
            reconstruct_codec_samples(run_dir, refs, config, data, num_prompts, device, stats)
        grid = codec_grid(run_dir, refs)
    charts = history_charts(read_history(run_dir / "history.jsonl"))
    index = run_dir / "samples" / INDEX
    index.parent.mkdir(parents=True, exist_ok=True)
    write_atomic_text(index, render_page(run_dir, task, grid, charts))
    return ReviewResult(index, task, [r.name for r in refs], stats, problems)


# =========================================================================== CLI


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "review",
        help="listen across checkpoints: fixed-seed samples of every checkpoint on one offline HTML page",
        description=(
            "For each checkpoint of RUN (numbered, best, last) generate the same prompts with the same seeds "
            "(LM runs) or reconstruct the same dataset clips (codec runs), skipping what exists, and write "
            "RUN/samples/index.html: a grid of samples × checkpoints with audio players and mel spectrograms, "
            "the loss/metric curves and the config delta. The page works offline. Run it again after more "
            "training: only new checkpoints (and a changed last/best) are generated."
        ),
    )
    p.add_argument("run", help="run folder, task/signature, or a signature prefix (see `tunesmith runs list`)")
    p.add_argument("--epochs", default="all", help="all (default) or a comma list of epochs and best/last: 2,5,best")
    p.add_argument(
        "--prompts",
        type=Path,
        help="LM runs: prompts file (JSON lines or plain lines, as for `tunesmith generate`); replaces the "
        "review's stored prompts. Default: the stored prompts, else the run's generate.prompts or dataset texts",
    )
    p.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        help=f"LM: default prompts made the first time ({DEFAULT_NUM_PROMPTS}); codec: clips (check.num_samples)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds per LM sample (default: generate.duration)")
    p.add_argument("--data", type=Path, default=None, help="codec runs: dataset (default: the one it trained on)")
    p.add_argument("--list-epochs", action="store_true", help="list the run's checkpoints and exit")
    p.add_argument("--index-only", action="store_true", help="only rewrite index.html from the samples that exist")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--runs-dir", type=Path, default=None, help="where run folders live (default: ./runs)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def _list_epochs(run_dir: Path, as_json: bool) -> int:
    refs = list_checkpoints(run_dir)
    rows = []
    for ref in refs:
        folder = run_dir / "samples" / REVIEW_DIR / ref.name
        samples = len(list(folder.glob("*.wav"))) if folder.is_dir() and not _weights_changed(folder, ref) else 0
        rows.append({"name": ref.name, "epoch": ref.epoch, "step": ref.step, "samples": samples})
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"{run_dir}: no checkpoints yet")
    else:
        print(f"{'checkpoint':<14}{'epoch':>7}{'step':>9}{'samples':>9}")
        for r in rows:
            print(f"{r['name']:<14}{r['epoch'] if r['epoch'] is not None else '-':>7}"
                  f"{r['step'] if r['step'] is not None else '-':>9}{r['samples']:>9}")  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    from tunesmith.xp import find_run

    path = Path(args.run)
    run_dir = path if (path / "checkpoints").is_dir() else find_run(args.run, args.runs_dir)
    if args.list_epochs:
        return _list_epochs(run_dir, args.json)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = review_run(
        run_dir,
        epochs=args.epochs,
        prompts=args.prompts,
        index_only=args.index_only,
        duration=args.duration,
        num_prompts=args.num_prompts,
        data=args.data,
        device=device,
    )
    s = result.stats
    if args.json:
        print(json.dumps({"index": str(result.index), "task": result.task, "checkpoints": result.checkpoints,
                          **dataclasses.asdict(s), "skipped_lines": result.problems}))  # fmt: skip
    else:
        print(
            f"{len(result.checkpoints)} checkpoints: {s.generated} samples made, {s.reused} shared with identical "
            f"weights, {s.existing} already there"
            + (f"; unusable: {', '.join(s.skipped_checkpoints)}" if s.skipped_checkpoints else "")
        )
        print(f"review page: {result.index}")
    return 1 if result.problems or s.skipped_checkpoints else 0
