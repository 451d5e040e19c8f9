"""Training curves of a run: the records of ``history.jsonl`` grouped into charts worth a look (loss,
per-codebook CE, valid/evaluate metrics, learning rate, gradient norm), drawn as inline SVG line charts.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

MAX_CHARTS = 12


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
