"""The evaluate stage's metrics as a table with one row per evaluated checkpoint (epoch): FAD, CLAP, KLD, chroma,
WER of an LM run, or any other scalar the evaluate stage logged, with each column's best value marked.

Curves show the trend; this table answers "is checkpoint 40 better than 30 on FAD" at a glance.
"""

from __future__ import annotations

import html
import math

from tunesmith.eval.suite import metric_direction
from tunesmith.review.charts import format_step, format_value, record_metrics

MAX_COLUMNS = 16  # beyond this the table says which metrics it left out (a MIDI run logs many per split)


def evaluate_rows(history: list[dict]) -> tuple[list[str], list[dict]]:
    """(metric names in first-seen order, one record per evaluated epoch: the last evaluate record of it)."""
    by_epoch: dict[int, dict] = {}
    names: dict[str, None] = {}
    for record in history:
        if record.get("stage") != "evaluate" or not isinstance(record.get("epoch"), int):
            continue
        values = record_metrics(record)
        if values:
            by_epoch[record["epoch"]] = {"epoch": record["epoch"], "step": record.get("step", 0), **values}
            names.update(dict.fromkeys(values))
    return list(names), [by_epoch[e] for e in sorted(by_epoch)]


def best_epochs(names: list[str], rows: list[dict]) -> dict[str, int]:
    """metric → the epoch with its best value (lower or higher as the metric's direction says; unknown: none)."""
    best: dict[str, int] = {}
    for name in names:
        direction = metric_direction(name)
        points = [
            (r[name], r["epoch"]) for r in rows if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])
        ]
        if direction and points:
            pick = min if direction == "min" else max
            best[name] = pick(points)[1]
    return best


def evaluate_table_html(history: list[dict]) -> str:
    """The HTML table (empty string when the run never logged an evaluate metric)."""
    names, rows = evaluate_rows(history)
    if not rows:
        return ""
    shown, left_out = names[:MAX_COLUMNS], names[MAX_COLUMNS:]
    best = best_epochs(shown, rows)
    arrows = {"min": " ↓", "max": " ↑"}
    head = "<th>epoch</th><th>step</th>" + "".join(
        f"<th><code>{html.escape(n)}</code>{arrows.get(metric_direction(n) or '', '')}</th>" for n in shown
    )
    body = []
    for row in rows:
        cells = []
        for name in shown:
            value = row.get(name)
            if not isinstance(value, (int, float)):
                cells.append('<td class="num muted">—</td>')
                continue
            mark = ' class="num best" title="best of this column"' if best.get(name) == row["epoch"] else ' class="num"'
            cells.append(f"<td{mark}>{format_value(float(value))}</td>")
        where = f'<td class="num">{row["epoch"]}</td><td class="num">{format_step(row["step"])}</td>'
        body.append(f"<tr>{where}{''.join(cells)}</tr>")
    more = (
        f'<p class="muted">not shown ({len(left_out)} more): {html.escape(", ".join(left_out))}</p>' if left_out else ""
    )
    return (
        "<h3>Generation metrics per checkpoint (evaluate stage)</h3>"
        '<p class="muted">↓ lower is better, ↑ higher is better; the best value of each column is marked. '
        "The full reports are in <code>RUN/evaluate/</code>.</p>"
        f'<div class="table-wrap"><table class="numbers evaluate"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{more}"
    )
