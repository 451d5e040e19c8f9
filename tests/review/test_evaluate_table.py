"""The review page's table of generation metrics per checkpoint (issue 17): one row per evaluated epoch, the best
value of each column marked by the metric's own direction (FAD lower, CLAP higher)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tunesmith.review import review_run
from tunesmith.review.metrics_table import best_epochs, evaluate_rows, evaluate_table_html

HISTORY = [
    {"stage": "train", "epoch": 1, "step": 10, "loss": 6.0},
    {"stage": "evaluate", "epoch": 1, "step": 10, "time": 1.5, "fad": 9.0, "clap": 0.10},
    {"stage": "evaluate", "epoch": 2, "step": 20, "time": 2.5, "fad": 4.0, "clap": 0.05, "wer": 0.5},
    {"stage": "evaluate", "epoch": 3, "step": 30, "time": 3.5, "fad": 6.0, "clap": 0.30},
]


def test_rows_per_epoch_and_the_best_by_each_metrics_direction() -> None:
    names, rows = evaluate_rows(HISTORY)
    assert names == ["fad", "clap", "wer"] and [r["epoch"] for r in rows] == [1, 2, 3]
    assert "time" not in rows[0] and rows[1]["wer"] == 0.5 and "wer" not in rows[2]
    assert best_epochs(names, rows) == {"fad": 2, "clap": 3, "wer": 2}
    assert best_epochs(["mystery"], [{"epoch": 1, "mystery": 1.0}]) == {}  # unknown direction: nothing marked
    assert evaluate_table_html([r for r in HISTORY if r["stage"] != "evaluate"]) == ""


def test_the_table_on_an_lm_review_page(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "lm" / "lm00001"
    run.mkdir(parents=True)
    config = {"generate": {"prompts": ["calm piano"], "duration": 1.0}, "train": {"checkpoint": {"keep_last": 0}}}
    (run / "run.json").write_text(json.dumps({"task": "lm", "preset": "tiny", "signature": run.name, "config": config}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "epoch": 3, "step": 30}))
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HISTORY))
    text = review_run(run, index_only=True).index.read_text()
    table = text[text.index("Generation metrics per checkpoint") :]
    table = table[: table.index("</table>")]
    body = table[table.index("<tbody>") :]
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    assert len(rows) == 3  # epochs 1, 2, 3
    marked = [re.findall(r'<td class="num best"[^>]*>([^<]+)</td>', row) for row in rows]
    assert marked == [[], ["4.000", "0.5000"], ["0.3000"]]  # fad and wer best at epoch 2, clap at epoch 3
    assert "<code>fad</code> ↓" in table and "<code>clap</code> ↑" in table
    assert '<td class="num muted">—</td>' in rows[0] and '<td class="num muted">—</td>' in rows[2]  # wer once
