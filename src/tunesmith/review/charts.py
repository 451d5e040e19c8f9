"""Training curves of a run: the records of ``history.jsonl`` grouped into charts worth a look (loss,
per-codebook metrics, every valid/evaluate metric whatever its name, learning rate, gradient norm), drawn
as inline SVG line charts; metrics measured once so far are listed as numbers instead of one-dot charts.

Axes read as plain numbers (steps as ``1,000``, never ``1e+03``), every label stays inside the drawing
(margins are sized from the labels), the legend wraps, and a chart may carry labelled horizontal baselines
(dashed), such as the unigram cross-entropy of an LM's codes.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from pathlib import Path

MAX_CHARTS = 12


@dataclasses.dataclass
class Series:
    """A named line of ``points`` (x = optimizer step, y = metric value)."""

    label: str
    points: list[tuple[float, float]]


@dataclasses.dataclass
class Baseline:
    """A labelled horizontal line at ``value`` (same units as the chart's y axis), drawn dashed in the colour of
    the series labelled ``match`` (grey when empty). Baselines sharing a label share one legend entry."""

    label: str
    value: float
    match: str = ""


@dataclasses.dataclass
class Chart:
    """A chart: ``title``, its lines, its baselines, the metric names it draws and ``stages`` (history stages
    its points come from, e.g. ``evaluate``), and a ``note`` shown under it (what the figure was measured on)."""

    title: str
    series: list[Series]
    baselines: list[Baseline] = dataclasses.field(default_factory=list)
    metrics: list[str] = dataclasses.field(default_factory=list)
    stages: list[str] = dataclasses.field(default_factory=list)
    note: str = ""


@dataclasses.dataclass
class Number:
    """A metric measured once so far: shown as a table row, not as a one-dot chart."""

    metric: str
    stage: str
    step: float
    value: float


@dataclasses.dataclass
class Figures:
    """What the curves section shows: ``charts``, single measurements as ``numbers``, and the titles of
    charts left out beyond the limit (named on the page, never dropped silently)."""

    charts: list[Chart]
    numbers: list[Number]
    omitted: list[str]


PALETTE = ("#3b5bdb", "#e8590c", "#2f9e44", "#c2255c", "#7048e8", "#0c8599", "#e67700", "#495057")
BASELINE_COLOR = "#555"
_PER_CODEBOOK = re.compile(r"^(.+)_q(\d+)$")
_NOT_METRICS = frozenset({"stage", "epoch", "step", "time"})
_TRAIN_STAGES = ("train_step", "train")
_STAGE_ORDER = ("train_step", "train", "valid", "evaluate")
_STAGE_LABELS = {"train_step": "train (per update)", "train": "train (epoch)", "valid": "valid", "evaluate": "evaluate"}
_CODEBOOK_TITLES = {"ce": "CE"}  # a per-codebook family's name in a title (others keep their metric name)


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


def record_metrics(record: dict) -> dict[str, int | float]:
    """The metric values of one history.jsonl record: its numbers other than stage/epoch/step/time (booleans
    are no metrics), in the record's order."""
    return {
        key: value
        for key, value in record.items()
        if key not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _metric_points(history: list[dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """metric → stage → [(step, value)] for every finite numeric value."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for record in history:
        stage = str(record.get("stage", ""))
        for key, value in record_metrics(record).items():
            if math.isfinite(value):
                out.setdefault(key, {}).setdefault(stage, []).append((float(record["step"]), float(value)))
    return out


def _stage_order(stages: object) -> list[str]:
    """Known stages first (train per update, train per epoch, valid, evaluate), then any other by name."""
    names = list(stages)  # type: ignore[call-overload]
    return [s for s in _STAGE_ORDER if s in names] + sorted(s for s in names if s not in _STAGE_ORDER)


def _measured_stages(stages: dict) -> list[str]:
    """The stages of a metric other than training's own (valid, evaluate, and any a task adds)."""
    return [s for s in _stage_order(stages) if s not in _TRAIN_STAGES]


def _all_charts(history: list[dict]) -> list[Chart]:
    points = _metric_points(history)
    charts: list[Chart] = []

    def stage_series(metric: str, stages: list[str]) -> tuple[list[Series], list[str]]:
        found = points.get(metric, {})
        used = [s for s in stages if found.get(s)]
        return [Series(_STAGE_LABELS.get(s, s), found[s]) for s in used], used

    loss, used = stage_series("loss", _stage_order(points.get("loss", {})))
    if loss:
        charts.append(Chart("loss", loss, metrics=["loss"], stages=used))
    families: dict[str, list[tuple[int, str]]] = {}
    for key in points:
        if (m := _PER_CODEBOOK.match(key)) and _measured_stages(points[key]):
            families.setdefault(m.group(1), []).append((int(m.group(2)), key))
    if "ce" in families:
        families.pop("ppl", None)  # the same information as the CE per codebook
    for base in sorted(families, key=lambda b: (b != "ce", b)):
        members = sorted(families[base])
        stages = _stage_order({s for _, key in members for s in _measured_stages(points[key])})
        for stage in stages:
            series = [Series(f"q{i}", points[key][stage]) for i, key in members if points[key].get(stage)]
            title = f"{stage} {_CODEBOOK_TITLES.get(base, base)} per codebook"
            charts.append(Chart(title, series, metrics=[key for _, key in members], stages=[stage]))
    others = sorted(
        key
        for key, stages in points.items()
        if key != "loss" and not _PER_CODEBOOK.match(key) and _measured_stages(stages)
    )
    for key in others:
        series, used = stage_series(key, [s for s in _stage_order(points[key]) if s != "train_step"])
        charts.append(Chart(key, series, metrics=[key], stages=used))
    for key in ("lr", "grad_norm"):
        series, used = stage_series(key, ["train_step"])
        if series:
            charts.append(
                Chart("learning rate" if key == "lr" else "gradient norm", series, metrics=[key], stages=used)
            )
    return charts


def history_figures(history: list[dict], limit: int = MAX_CHARTS) -> Figures:
    """The curves section: charts (at most ``limit``), metrics with a single measurement as numbers, and the
    titles of charts beyond the limit."""
    charts, numbers = [], []
    for chart in _all_charts(history):
        if all(len(s.points) <= 1 for s in chart.series):
            numbers.extend(_numbers_of(chart))
        else:
            charts.append(chart)
    return Figures(charts[:limit], numbers, [c.title for c in charts[limit:]])


def _numbers_of(chart: Chart) -> list[Number]:
    """The single points of a chart as numbers, named by metric (``code_ppl_q0``) and stage."""
    out = []
    per_codebook = len(chart.metrics) > 1
    for series in chart.series:
        for step, value in series.points:
            if per_codebook:
                metric = next((m for m in chart.metrics if m.endswith("_" + series.label)), series.label)
                stage = chart.stages[0] if chart.stages else ""
            else:
                metric = chart.metrics[0] if chart.metrics else chart.title
                stage = next((s for s in chart.stages if _STAGE_LABELS.get(s, s) == series.label), series.label)
            out.append(Number(metric, stage, step, value))
    return out


def history_charts(history: list[dict], limit: int = MAX_CHARTS) -> list[Chart]:
    """The charts of :func:`history_figures` (metrics with more than one point)."""
    return history_figures(history, limit).charts


# --------------------------------------------------------------------------- ticks and labels


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


def format_step(value: float) -> str:
    """A step or epoch number as people write it: ``1,000``, ``25,000`` (never ``1e+03``)."""
    return f"{round(value):,}"


def format_value(value: float) -> str:
    """A measured value with four significant digits, in plain notation from 0.0001 to 10 million
    (``0.01670``, ``107.4``, ``12,345``), else ``1.234e-05``."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    size = abs(value)
    if 1e-4 <= size < 1e7:
        return f"{value:,.{max(0, 3 - math.floor(math.log10(size)))}f}"
    return f"{value:.3e}"


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels for evenly spaced ``ticks``: as many decimals as their spacing needs, thousands separated,
    plain numbers from 0.0001 up (smaller spacings use a short mantissa-exponent form such as ``2.5e-5``)."""
    if not ticks:
        return []
    spacing = min((abs(b - a) for a, b in zip(ticks, ticks[1:], strict=False) if b != a), default=abs(ticks[0]) or 1.0)
    if spacing < 1e-4:
        return [_short_exponent(t) for t in ticks]
    decimals = 0
    while decimals < 6 and abs(round(spacing, decimals) - spacing) > spacing * 1e-6:
        decimals += 1
    return ["0" if t == 0 else f"{t:,.{decimals}f}" for t in ticks]


def _short_exponent(value: float) -> str:
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2g}".split("e") if "e" in f"{value:.2g}" else (f"{value:.2g}", "0")
    return f"{mantissa}e{int(exponent)}" if int(exponent) else mantissa


def text_width(text: str, font_size: float = 11.0) -> float:
    """A generous estimate of a label's width in px in a sans-serif font (digits ~0.6 em, capitals wider)."""
    wide = sum(1 for c in text if c.isupper() or c in "mwMW")
    return font_size * (0.62 * len(text) + 0.2 * wide)


# --------------------------------------------------------------------------- SVG


def _legend_rows(entries: list[str], width: float, start: float) -> list[list[tuple[float, str]]]:
    """Legend entries laid out in rows that fit ``width`` px from x = ``start``: [[(x, label), ...], ...]."""
    rows: list[list[tuple[float, str]]] = [[]]
    x = start
    for label in entries:
        need = 14 + text_width(label) + 12
        if rows[-1] and x + need > width - 4:
            rows.append([])
            x = start
        rows[-1].append((x, label))
        x += need
    return rows


def svg_chart(chart: Chart, width: int = 380, height: int = 230) -> str:
    """An inline SVG line chart: axes with round ticks (steps on x), one coloured line (and dots) per series,
    dashed labelled baselines, a legend that wraps. Every text stays inside ``width`` × ``height``."""
    xs = [x for s in chart.series for x, _ in s.points]
    ys = [y for s in chart.series for _, y in s.points] + [b.value for b in chart.baselines]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.06
        y0, y1 = y0 - pad, y1 + pad
    y_ticks = nice_ticks(y0, y1)
    y_labels = tick_labels(y_ticks)
    x_ticks = nice_ticks(x0, x1, integer=True)
    x_labels = [format_step(t) for t in x_ticks]

    entries = [s.label for s in chart.series]
    entries += list(dict.fromkeys(b.label for b in chart.baselines if b.label not in entries))
    left = max(34.0, 8 + max((text_width(t) for t in y_labels), default=0))
    right = max(12.0, text_width(x_labels[-1]) / 2 + 4 if x_labels else 0)
    legend = _legend_rows(entries, width, left)
    top = 12 + 14 * len(legend)
    bottom = 34
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(chart.title)}" font-family="system-ui, sans-serif" font-size="11">',
        f'<rect x="{left:.1f}" y="{top}" width="{plot_w:.1f}" height="{plot_h}" fill="#fff" stroke="#ccc"/>',
    ]
    for tick, label in zip(y_ticks, y_labels, strict=True):
        y = py(tick)
        parts.append(f'<line x1="{left:.1f}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text class="tick y" x="{left - 4:.1f}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{label}</text>'
        )
    for tick, label in zip(x_ticks, x_labels, strict=True):
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#999"/>')
        parts.append(
            f'<text class="tick x" x="{x:.1f}" y="{top + plot_h + 15}" text-anchor="middle" fill="#555">{label}</text>'
        )
    parts.append(
        f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" fill="#888" '
        'font-size="10">step</text>'
    )
    colors = {}
    for i, series in enumerate(chart.series):
        color = colors[series.label] = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in series.points)
        if len(series.points) > 1:
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        if len(series.points) <= 40:
            parts.extend(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4" fill="{color}"/>' for x, y in series.points
            )
    for baseline in chart.baselines:
        y = py(baseline.value)
        color = colors.get(baseline.match, BASELINE_COLOR)
        tip = f"{baseline.label}{' ' + baseline.match if baseline.match else ''}: {baseline.value:.4g}"
        parts.append(
            f'<line class="baseline" x1="{left:.1f}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-width="1.2" stroke-dasharray="5 3" '
            f'data-value="{baseline.value!r}"><title>{html.escape(tip)}</title></line>'
        )
    for row_number, row in enumerate(legend):
        y = 8 + 14 * row_number
        for x, label in row:
            baseline = label not in colors
            if baseline:
                mark = (
                    f'<line x1="{x:.1f}" x2="{x + 10:.1f}" y1="{y + 5}" y2="{y + 5}" stroke="{BASELINE_COLOR}" '
                    'stroke-width="1.2" stroke-dasharray="3 2"/>'
                )
            else:
                mark = f'<rect x="{x:.1f}" y="{y}" width="10" height="10" fill="{colors[label]}"/>'
            parts.append(mark)
            parts.append(f'<text class="legend" x="{x + 14:.1f}" y="{y + 9}" fill="#333">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
