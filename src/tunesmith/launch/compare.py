"""``tunesmith runs compare SIG...``: runs side by side (config delta, final and best metrics) and one
HTML page with their loss curves overlaid, drawn by the review page's chart code (tunesmith.review.charts)."""

from __future__ import annotations

import dataclasses
import html
from importlib import resources
from pathlib import Path
from typing import Any

from tunesmith.artifacts.runs import HISTORY_FILE, RUN_FILE, STATUS_FILE, find_run, read_json
from tunesmith.config import flatten
from tunesmith.errors import UserError
from tunesmith.review.charts import Chart, Series, read_history, record_metrics, svg_chart

CURVES = (("train_step", "loss", "train loss per update"), ("train", "loss", "train loss per epoch"),
          ("valid", "loss", "valid loss"))  # fmt: skip


@dataclasses.dataclass
class ComparedRun:
    signature: str
    dir: Path
    task: str
    config: dict[str, Any]  # flat dotted keys
    status: dict
    history: list[dict]

    def final(self, stage: str, metric: str = "loss") -> float | None:
        values = [
            r[metric] for r in self.history if r.get("stage") == stage and isinstance(r.get(metric), (int, float))
        ]
        return float(values[-1]) if values else None


def load_runs(refs: list[str], runs_dir: Path | None = None) -> list[ComparedRun]:
    if len(refs) < 2:
        raise UserError("runs compare needs at least two runs (signatures, task/sig or run folders)")
    runs = []
    for ref in refs:
        run_dir = find_run(ref, runs_dir)
        meta = read_json(run_dir / RUN_FILE) or {}
        runs.append(
            ComparedRun(
                signature=str(meta.get("signature") or run_dir.name),
                dir=run_dir,
                task=str(meta.get("task")),
                config=flatten(meta.get("config") or {}),
                status=read_json(run_dir / STATUS_FILE) or {},
                history=read_history(run_dir / HISTORY_FILE),
            )
        )
    return runs


def config_delta(runs: list[ComparedRun]) -> dict[str, list[Any]]:
    """Dotted key → each run's value, for the keys whose values differ between the runs."""
    keys = sorted({k for r in runs for k in r.config})
    missing = object()
    out = {}
    for key in keys:
        values = [r.config.get(key, missing) for r in runs]
        if any(v != values[0] for v in values[1:]):
            out[key] = [None if v is missing else v for v in values]
    return out


def evaluate_metric_names(runs: list[ComparedRun]) -> list[str]:
    """Scalar metrics any run logged in its evaluate stage, in first-seen order (bookkeeping keys left out)."""
    names: dict[str, None] = {}
    for r in runs:
        for record in r.history:
            if record.get("stage") == "evaluate":
                names.update(dict.fromkeys(record_metrics(record)))
    return list(names)


def metric_rows(runs: list[ComparedRun]) -> dict[str, list[str]]:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    rows = {
        "state": [str(r.status.get("state", "created")) for r in runs],
        "epoch / step": [f"{r.status.get('epoch', 0)} / {r.status.get('step', 0)}" for r in runs],
        "final train loss": [fmt(r.final("train")) for r in runs],
        "final valid loss": [fmt(r.final("valid")) for r in runs],
    }
    for name in evaluate_metric_names(runs):  # the last evaluate stage's generation metrics (fad, clap, ...)
        rows[f"final evaluate {name}"] = [fmt(r.final("evaluate", name)) for r in runs]
    best = [r.status.get("best") or {} for r in runs]
    rows["best"] = [
        f"{b['metric']}={b['value']:.4g} @{b.get('epoch')}" if b.get("value") is not None else "-" for b in best
    ]
    return rows


def compare_text(runs: list[ComparedRun]) -> str:
    header = ["", *(r.signature for r in runs)]
    rows = [[f"{k}", *("-" if v is None else str(v) for v in values)] for k, values in config_delta(runs).items()]
    if not rows:
        rows = [["(same config)", *("" for _ in runs)]]
    rows += [[k, *values] for k, values in metric_rows(runs).items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def overlay_charts(runs: list[ComparedRun]) -> list[Chart]:
    """One chart per loss curve, a line per run (x = optimizer step)."""
    charts = []
    for stage, metric, title in CURVES:
        series = []
        for r in runs:
            points = [(float(h["step"]), float(h[metric])) for h in r.history
                      if h.get("stage") == stage and isinstance(h.get(metric), (int, float))]  # fmt: skip
            if points:
                series.append(Series(r.signature, points))
        if series:
            charts.append(Chart(title, series, metrics=[metric], stages=[stage]))
    return charts


def compare_html(runs: list[ComparedRun]) -> str:
    """A self-contained page: the delta and metrics table, then the overlaid loss curves (inline SVG)."""
    css = resources.files("tunesmith").joinpath("review_assets/review.css").read_text(encoding="utf-8")
    head = "".join(f"<th>{html.escape(r.signature)}</th>" for r in runs)
    body = ""
    for key, values in config_delta(runs).items():
        body += (
            f"<tr><td>{html.escape(key)}</td>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>"
        )
    for key, values in metric_rows(runs).items():
        body += (
            f"<tr><td><b>{html.escape(key)}</b></td>" + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>"
        )
    charts = "".join(f"<figure><figcaption>{html.escape(c.title)}</figcaption>{svg_chart(c)}</figure>"
                     for c in overlay_charts(runs))  # fmt: skip
    title = "compare " + " ".join(r.signature for r in runs)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{' · '.join(html.escape(str(r.dir)) for r in runs)}</p>"
        f"<table class='kv'><tr><th></th>{head}</tr>{body}</table>"
        f"<section class='charts'>{charts or '<p>no loss history yet</p>'}</section></body></html>"
    )
