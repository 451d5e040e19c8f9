"""The review page: one self-contained HTML document (styles inlined from ``review_assets/review.css``,
relative links only, no script) with the run summary, its config delta, the curves and the sample grid.
"""

from __future__ import annotations

import dataclasses
import html
import json
from importlib import resources
from pathlib import Path

from tunesmith.review.charts import Chart, Figures, Number, format_step, format_value, read_history, svg_chart
from tunesmith.review.checkpoints import REVIEW_DIR
from tunesmith.review.grid import Cell, Grid
from tunesmith.review.metrics_table import evaluate_table_html


@dataclasses.dataclass
class PageNotes:
    """Sentences the page shows beside its figures: under "Curves" (what they were measured on, baselines),
    above the samples (hidden or deleted checkpoints, the clips), and what each stage's single measurements
    were measured on (``{"evaluate": "4 valid clips ≤ 4 s"}``). Empty strings are left out."""

    curves: list[str] = dataclasses.field(default_factory=list)
    checkpoints: list[str] = dataclasses.field(default_factory=list)
    samples: list[str] = dataclasses.field(default_factory=list)
    numbers_measured_on: dict[str, str] = dataclasses.field(default_factory=dict)


def _css() -> str:
    return resources.files("tunesmith").joinpath("review_assets/review.css").read_text(encoding="utf-8")


def html_head(title: str, extra_css: str = "") -> str:
    """The page's doctype and ``<head>``: title, no favicon request, the review CSS inlined (offline page)."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>
{_css()}{extra_css}</style>
</head>"""


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _paragraphs(texts: list[str], css_class: str) -> str:
    return "".join(f'<p class="{css_class}">{html.escape(t)}</p>' for t in texts if t)


def _numbers_table(numbers: list[Number], measured_on: dict[str, str]) -> str:
    """Metrics measured once so far: metric, stage, step, value (and what it was measured on)."""
    if not numbers:
        return ""
    with_source = any(measured_on.get(n.stage) for n in numbers)
    head = "<th>metric</th><th>stage</th><th>step</th><th>value</th>" + ("<th>measured on</th>" if with_source else "")
    rows = []
    for n in numbers:
        source = f"<td>{html.escape(measured_on.get(n.stage, ''))}</td>" if with_source else ""
        rows.append(
            f"<tr><td><code>{html.escape(n.metric)}</code></td><td>{html.escape(n.stage)}</td>"
            f'<td class="num">{format_step(n.step)}</td><td class="num">{format_value(n.value)}</td>{source}</tr>'
        )
    return (
        '<h3>Measured once so far</h3><div class="table-wrap"><table class="numbers">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _chart_figure(chart: Chart) -> str:
    note = f'<p class="chart-note muted">{html.escape(chart.note)}</p>' if chart.note else ""
    return f'<figure class="chart"><figcaption>{html.escape(chart.title)}</figcaption>{svg_chart(chart)}{note}</figure>'


def render_page(
    run_dir: Path, task: str, grid: Grid, figures: Figures | list[Chart], notes: PageNotes | None = None
) -> str:
    """The review page (HTML text) for ``run_dir``: summary, config delta, curves (charts, single measurements
    as numbers, notes on what they were measured on), the notes on checkpoints and the sample grid."""
    if not isinstance(figures, Figures):
        figures = Figures(list(figures), [], [])
    notes = notes or PageNotes()
    from tunesmith import __version__
    from tunesmith.artifacts.runs import RUN_FILE, STATUS_FILE, read_json

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
    charts_html = _paragraphs(notes.curves, "note")
    if figures.charts:
        charts_html += '<div class="charts">' + "".join(_chart_figure(c) for c in figures.charts) + "</div>"
    charts_html += _numbers_table(figures.numbers, notes.numbers_measured_on)
    charts_html += evaluate_table_html(read_history(run_dir / "history.jsonl"))  # FAD, CLAP, ... per checkpoint
    if figures.omitted:
        omitted = html.escape(", ".join(figures.omitted))
        charts_html += f'<p class="muted">not charted (more than {len(figures.charts)} charts): {omitted}</p>'
    if not (figures.charts or figures.numbers):
        charts_html += '<p class="muted">no history yet</p>'
    head = "".join(
        f"<th>{html.escape(label)}<div class='muted'>{html.escape(detail)}</div></th>"
        for label, detail in zip(grid.columns, grid.column_details, strict=True)
    )
    rows = []
    for index, (title, detail, cells) in enumerate(zip(grid.row_titles, grid.row_details, grid.cells, strict=True)):
        tds = "".join(_cell_html(cell, title) for cell in cells)
        texts = "".join(f'<td class="prompt">{html.escape(values[index])}</td>' for _, values in grid.row_columns)
        rows.append(
            f'<tr><td class="prompt">{html.escape(title)}<div class="muted">{html.escape(detail)}</div></td>'
            f"{texts}{tds}</tr>"
        )
    row_head = {"lm": "prompt", "tts": "text"}.get(task, "clip")
    row_head += "".join(f"</th><th>{html.escape(header)}" for header, _ in grid.row_columns)
    grid_html = (
        f'<div class="grid-wrap"><table class="grid"><thead><tr><th>{row_head}</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        if grid.cells and grid.columns
        else '<p class="muted">no checkpoints with samples yet</p>'
    )
    what = {
        "lm": "The same prompts with the same seeds at every checkpoint.",
        "tts": "The same texts, speakers (voice references) and seeds at every checkpoint.",
    }.get(task, "The same dataset clips through every checkpoint: originals beside reconstructions.")
    title = f"tunesmith review · {task} {meta.get('signature', run_dir.name)}"
    return f"""{html_head(title)}
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
{_paragraphs(notes.checkpoints, "note checkpoints")}{_paragraphs(notes.samples, "note")}
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
