"""The review page reads right: plain step numbers on axes, labels inside the drawing, single measurements as
numbers, one column per distinct checkpoint, a note when checkpoints are hidden or deleted, the clip set named
wherever a codec figure depends on it, and a page that never overflows the window (checked in Chromium)."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support.browser import headless_chromium
from tunesmith.review import (
    Baseline,
    Chart,
    Series,
    format_step,
    format_value,
    history_figures,
    review_run,
    svg_chart,
    tick_labels,
)

STEPS_PER_EPOCH = 5000


def _checkpoint(run: Path, name: str, epoch: int, weights: str) -> None:
    folder = run / "checkpoints" / name
    folder.mkdir(parents=True)
    manifest = {"files": {"model.safetensors": {"sha256": weights}}, "epoch": epoch, "step": STEPS_PER_EPOCH * epoch}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _history(epochs: int) -> list[dict]:
    lines = []
    for e in range(1, epochs + 1):
        for s in range(STEPS_PER_EPOCH * (e - 1) + 1, STEPS_PER_EPOCH * e + 1, 500):
            lines.append(
                {"stage": "train_step", "epoch": e, "step": s, "loss": 5.0 / e, "lr": 3e-4 / e, "grad_norm": 1.5}
            )
        lines.append({"stage": "valid", "epoch": e, "step": STEPS_PER_EPOCH * e, "loss": 4.5 / e, "fad": 9.0 - e})
    last = STEPS_PER_EPOCH * epochs
    lines.append({"stage": "evaluate", "epoch": epochs, "step": last, "clap": 0.31, "mse": 0.0167, "sisnr": -3.5})
    lines.append(
        {"stage": "evaluate", "epoch": epochs, "step": last, **{f"code_ppl_q{k}": 100.0 + k for k in range(4)}}
    )
    lines.append({"stage": "valid_pop", "epoch": epochs, "step": last, "loss": 3.0})
    lines.append({"stage": "valid_pop", "epoch": epochs - 1, "step": last - STEPS_PER_EPOCH, "loss": 3.5})
    return lines


def fake_run(root: Path, task: str, epochs: int, config: dict | None = None, keep_last: int = 0) -> Path:
    """A run folder with numbered checkpoints 1..epochs (distinct weights), ``best`` = epoch 1's weights and
    ``last`` = the final epoch's, history and run.json: enough for ``review_run(..., index_only=True)``."""
    run = root / "runs" / task / f"{task}00001"
    for e in range(1, epochs + 1):
        _checkpoint(run, f"epoch_{e:04d}", e, f"{e:064x}")
    _checkpoint(run, "best", 1, f"{1:064x}")
    _checkpoint(run, "last", epochs, f"{epochs:064x}")
    cfg = {"train": {"checkpoint": {"every_epochs": 1, "keep_last": keep_last}}, **(config or {})}
    if task == "lm":
        cfg.setdefault("generate", {"prompts": ["a calm piano piece", "fast drums"], "duration": 1.0})
    (run / "run.json").write_text(json.dumps({"task": task, "preset": "tiny", "signature": run.name, "config": cfg}))
    (run / "status.json").write_text(
        json.dumps({"state": "finished", "epoch": epochs, "step": STEPS_PER_EPOCH * epochs})
    )
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _history(epochs)))
    return run


class _Page(html.parser.HTMLParser):
    """The grid's column headers, the numbers table's rows and the notes of a review page."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.numbers: list[list[str]] = []
        self.notes: list[str] = []
        self._where: list[str] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            self._where.append(a.get("class") or "")
        elif tag == "th" and self._where[-1:] == ["grid"]:
            self._text = []
        elif tag == "tr" and self._where[-1:] == ["numbers"]:
            self.numbers.append([])
        elif tag == "td" and self._where[-1:] == ["numbers"]:
            self._text = []
        elif tag == "div" and "muted" in (a.get("class") or "") and self._where[-1:] == ["grid"]:
            self._text.append("\0")  # the header's detail line starts here
        elif tag == "p" and "note" in (a.get("class") or "").split():
            self._text = []
            self._where.append("note")

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text)
        if tag == "table" and self._where:
            self._where.pop()
        elif tag == "th" and self._where[-1:] == ["grid"]:
            self.headers.append(text.split("\0")[0])
        elif tag == "td" and self._where[-1:] == ["numbers"]:
            self.numbers[-1].append(text)
        elif tag == "p" and self._where[-1:] == ["note"]:
            self._where.pop()
            self.notes.append(text)

    def handle_data(self, data: str) -> None:
        self._text.append(data)


def _page(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text())
    page.numbers = [row for row in page.numbers if row]  # the header row has no td
    return page


# --------------------------------------------------------------------------- axes and labels


def test_step_axis_reads_plain_numbers() -> None:
    chart = Chart("loss", [Series("train", [(float(s), 1.0 / (1 + s)) for s in range(0, 25_001, 500)])])
    svg = ET.fromstring(svg_chart(chart))
    x_labels = [t.text for t in svg.iter("text") if t.get("class") == "tick x"]
    assert x_labels == ["0", "10,000", "20,000"] and all(
        re.fullmatch(r"\d{1,3}(,\d{3})*", label) for label in x_labels
    ), x_labels
    assert not any("e+" in (t.text or "") for t in svg.iter("text"))
    assert format_step(1000) == "1,000" and format_step(999.6) == "1,000" and format_step(7) == "7"
    assert tick_labels([0.0, 0.5, 1.0]) == ["0", "0.5", "1.0"]
    assert tick_labels([0.0, 0.00025, 0.0005]) == ["0", "0.00025", "0.00050"]
    assert tick_labels([0.0, 2500.0, 5000.0]) == ["0", "2,500", "5,000"]
    assert tick_labels([2.5, 2.75, 3.0]) == ["2.50", "2.75", "3.00"]
    assert tick_labels([1e-5, 2e-5, 3e-5]) == ["1e-5", "2e-5", "3e-5"]
    assert [format_value(v) for v in (0.0167, 107.42, 12345.6, 1e-6)] == ["0.01670", "107.4", "12,346", "1.000e-06"]


def test_labels_fit_the_drawing_and_the_legend_wraps() -> None:
    """Margins come from the labels: the last step label and the widest value label fit (estimated here,
    measured in Chromium below); a long legend takes more rows instead of running off the right edge."""
    from tunesmith.review.charts import text_width

    series = [Series(f"a long series label {i}", [(0.0, 1234.5), (123_456.0, 0.5)]) for i in range(4)]
    chart = Chart("loss", series, baselines=[Baseline("unigram (train codes)", 800.0)])
    width = 380
    svg = ET.fromstring(svg_chart(chart, width=width))
    for text in svg.iter("text"):
        x, w = float(text.get("x")), text_width(text.text or "", float(text.get("font-size") or 11))
        left = {"end": x - w, "middle": x - w / 2}.get(text.get("text-anchor") or "", x)
        assert left >= 0 and left + w <= width, (text.text, left, w)
    legend_rows = {t.get("y") for t in svg.iter("text") if t.get("class") == "legend"}
    assert len(legend_rows) >= 2
    assert [t.text for t in svg.iter("text") if t.get("class") == "legend"][-1] == "unigram (train codes)"
    (line,) = svg.findall("line[@class='baseline']")
    assert line.get("stroke-dasharray") and float(line.get("data-value")) == 800.0


# --------------------------------------------------------------------------- what is charted


def test_single_measurements_are_numbers_and_any_metric_name_is_shown() -> None:
    figures = history_figures(_history(3))
    titles = [c.title for c in figures.charts]
    assert titles[0] == "loss" and "fad" in titles and "learning rate" in titles
    loss = figures.charts[0]
    assert [s.label for s in loss.series] == ["train (per update)", "valid", "valid_pop"]  # a stage tasks may add
    numbers = {(n.metric, n.stage): n for n in figures.numbers}
    assert set(numbers) == {("clap", "evaluate"), ("mse", "evaluate"), ("sisnr", "evaluate")} | {
        (f"code_ppl_q{k}", "evaluate") for k in range(4)
    }
    assert numbers[("code_ppl_q2", "evaluate")].value == 102.0 and numbers[("mse", "evaluate")].step == 15_000
    charted = {m for c in figures.charts for m in c.metrics}
    assert not charted & {"clap", "mse", "code_ppl_q0"}  # no one-dot charts
    many = history_figures(_history(3), limit=2)
    assert len(many.charts) == 2 and many.omitted == titles[2:]


def test_numbers_table_and_charts_on_the_page(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "lm", 3)
    index = review_run(run, index_only=True).index
    page = _page(index)
    rows = {row[0]: row for row in page.numbers}
    assert rows["code_ppl_q1"] == ["code_ppl_q1", "evaluate", "15,000", "101.0"]
    assert rows["mse"][3] == "0.01670"
    text = index.read_text()
    labels = re.findall(r'aria-label="([^"]+)"', text)
    assert "fad" in labels and "clap" not in labels and not any("code_ppl" in label for label in labels)
    assert "e+0" not in text


# --------------------------------------------------------------------------- checkpoints


def test_one_column_per_distinct_checkpoint(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "lm", 3)
    result = review_run(run, index_only=True)
    assert result.checkpoints == ["epoch_0001", "epoch_0002", "epoch_0003", "best", "last"]
    page = _page(result.index)
    assert page.headers == ["prompt", "epoch 1 (best)", "epoch 2", "epoch 3 (last)"]
    assert not any("showing" in n for n in page.notes)
    # last written mid-epoch (a stop): its own weights, its own column; best without its numbered copy
    shutil.rmtree(run / "checkpoints" / "last")
    shutil.rmtree(run / "checkpoints" / "epoch_0001")
    _checkpoint(run, "last", 3, "f" * 64)
    assert _page(review_run(run, index_only=True).index).headers == [
        "prompt",
        "epoch 1 (best)",
        "epoch 2",
        "epoch 3",
        "epoch 3 (last)",
    ]


def test_hidden_checkpoints_are_named_with_the_option_that_shows_them(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "lm", 4)
    page = _page(review_run(run, epochs="3,last", index_only=True).index)
    assert page.headers == ["prompt", "epoch 3", "epoch 4 (last)"]
    (note,) = [n for n in page.notes if "showing" in n]
    assert note.startswith("showing 2 of 4 checkpoints — rerun with --epochs all to hear every one")
    assert f"tunesmith review {run} --epochs all" in note
    import argparse

    from tunesmith.commands.review import add_parser  # the option the note names is the command's

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert parser.parse_args(["review", "RUN", "--epochs", "all"]).epochs == "all"
    assert not any("showing" in n for n in _page(review_run(run, index_only=True).index).notes)


def test_checkpoints_deleted_by_keep_last_are_named(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "lm", 6, keep_last=3)
    for e in (1, 2, 3):
        shutil.rmtree(run / "checkpoints" / f"epoch_{e:04d}")
    page = _page(review_run(run, index_only=True).index)
    (note,) = [n for n in page.notes if "keep_last" in n]
    assert note.startswith("epochs 1, 2, 3: their numbered checkpoints no longer exist")
    assert "train.checkpoint.keep_last=3" in note
    assert page.headers == ["prompt", "epoch 1 (best)", "epoch 4", "epoch 5", "epoch 6 (last)"]


# --------------------------------------------------------------------------- the clip set of codec figures


def _codec_run(root: Path) -> Path:
    config = {"data": "/data/orchestral", "check": {"num_samples": 2, "max_seconds": 4.0}}
    run = fake_run(root, "codec", 2, config=config)
    for name in ("epoch_0001", "epoch_0002"):
        folder = run / "samples" / "review" / name
        folder.mkdir(parents=True)
        (folder / "source.json").write_text(json.dumps({"weights_sha256": f"{int(name[-1]):064x}"}))
        clips = [
            {"name": f"valid0000{i}_track", "seconds": s, "sisnr": 3.0, "mel": 0.5, "original": f"{i}.o.wav",
             "reconstructed": f"{i}.r.wav"}
            for i, s in enumerate((4.0, 2.5))
        ]  # fmt: skip
        (folder / "report.json").write_text(json.dumps({"clips": clips}))
    return run


def test_codec_page_names_the_clips_its_figures_were_measured_on(tmp_path: Path) -> None:
    run = _codec_run(tmp_path)
    index = review_run(run, index_only=True).index
    page = _page(index)
    curves = next(n for n in page.notes if n.startswith("Evaluate-stage figures"))
    for words in ("2 clips spread over the valid split of /data/orchestral", "≤ 4 s", "check.num_samples=2",
                  "6.5 s of audio in all", "`tunesmith check codec` measures its own clips (10 of ≤ 10 s",
                  "--num-samples 2 --max-seconds 4"):  # fmt: skip
        assert words in curves, words
    samples = next(n for n in page.notes if n.startswith("2 valid clips"))
    assert "6.5 s in all (the longest 4.0 s)" in samples and "the clips of the evaluate-stage figures" in samples
    code_ppl = next(row for row in page.numbers if row[0] == "code_ppl_q0")
    assert code_ppl[4] == "evaluate: 2 valid clips ≤ 4 s, 6.5 s in all"
    assert page.headers == ["clip", "original", "epoch 1 (best)", "epoch 2 (last)"]


def test_codec_figures_charted_over_epochs_carry_their_clip_set(tmp_path: Path) -> None:
    run = _codec_run(tmp_path)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    history.append({"stage": "evaluate", "epoch": 1, "step": STEPS_PER_EPOCH, "sisnr": -9.0, "clap": 0.2})
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    text = review_run(run, index_only=True, num_prompts=3).index.read_text()
    assert "<figcaption>sisnr</figcaption>" in text
    figure = text[text.index("<figcaption>sisnr</figcaption>") :]
    figure = figure[: figure.index("</figure>")]
    assert "evaluate: 2 valid clips ≤ 4 s" in figure
    assert "chosen with --num-prompts 3, while the evaluate stage measures 2" in text


def test_check_codec_says_which_clips_it_measured(tmp_path: Path, capsys) -> None:
    from tunesmith.eval.codec import CheckReport, ClipResult, clip_set_text, report_markdown

    clips = [ClipResult("valid00003_a", 10.0, 1, 1, 1, 1), ClipResult("valid00007_b", 3.25, 1, 1, 1, 1)]
    assert clip_set_text([c.name for c in clips], [c.seconds for c in clips]) == (
        "2 valid clips, 13.2 s in all (the longest 10.0 s)"
    )
    report = CheckReport(16000, 1.5, 2, clips)
    assert "Measured on 2 valid clips, 13.2 s in all" in report_markdown(report)

    # the command says it too, in its table output and its JSON
    from support.lm import make_codec_dir
    from tunesmith.cli import main
    from tunesmith.data.prepare import prepare_dataset

    data = tmp_path / "data"
    settings = {"sample_rate": 8000, "segment": 2.0, "min_segment": 1.0, "num_tracks": 4, "valid_fraction": 0.5}
    prepare_dataset([], data, source="synthetic", progress=False, **settings)
    codec = make_codec_dir(tmp_path)
    argv = ["check", "codec", str(codec), "--data", str(data), "--num-samples", "2", "--max-seconds", "1.5"]
    assert main([*argv, "--out", str(tmp_path / "table")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert "Measured on 2 valid clips, 3.0 s in all (the longest 1.5 s) (--num-samples, --max-seconds)" in out
    assert "Training's evaluate stage and `tunesmith review` measure the run's own clips" in out
    assert main([*argv, "--out", str(tmp_path / "json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clip_set"] == "2 valid clips, 3.0 s in all (the longest 1.5 s)"
    assert "Measured on 2 valid clips" in (tmp_path / "json" / "report.md").read_text()


# --------------------------------------------------------------------------- in a real browser

_LAYOUT = """
const page = document.documentElement;
const wrap = document.querySelector('.grid-wrap');
const texts = [];
for (const svg of document.querySelectorAll('svg')) {
  const box = svg.getBoundingClientRect();
  for (const t of svg.querySelectorAll('text')) {
    const r = t.getBoundingClientRect();
    texts.push({text: t.textContent, cls: t.getAttribute('class'), chart: svg.getAttribute('aria-label'),
                left: r.left - box.left, right: r.right - box.left, top: r.top - box.top, bottom: r.bottom - box.top,
                width: box.width, height: box.height});
  }
}
const notes = Array.from(document.querySelectorAll('p.note')).map(p => ({text: p.textContent, height: p.offsetHeight,
  right: p.getBoundingClientRect().right}));
return {pageScroll: page.scrollWidth, pageWidth: page.clientWidth, wrapScroll: wrap.scrollWidth,
        wrapWidth: wrap.clientWidth, wrapRight: wrap.getBoundingClientRect().right, texts: texts, notes: notes};
"""


@pytest.mark.slow
def test_page_layout_in_headless_chromium(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "lm", 9)
    meta = json.loads((run / "run.json").read_text())  # long unbreakable values: a deep data path, a long word
    meta["delta"] = {"data": "/scratch/" + "very_long_folder_name_" * 12 + "dataset", "optim.lr": 0.002}
    meta["config"]["generate"]["prompts"].append("orchestral" * 12)
    (run / "run.json").write_text(json.dumps(meta))
    index = review_run(run, epochs="2,4,6,8,9", index_only=True).index
    driver, profile = headless_chromium()
    try:
        for width in (900, 1400):
            driver.set_window_size(width, 1000)
            driver.get(index.as_uri())
            found = driver.execute_script(_LAYOUT)
            assert found["pageScroll"] <= found["pageWidth"], found["pageScroll"]  # no sideways page scroll
            assert found["wrapScroll"] > found["wrapWidth"]  # the wide grid scrolls inside its own box
            assert found["wrapRight"] <= found["pageWidth"]
            assert found["texts"]
            for t in found["texts"]:  # every label inside its chart: nothing clipped at any edge
                assert t["left"] >= -0.5 and t["right"] <= t["width"] + 0.5, t
                assert t["top"] >= -0.5 and t["bottom"] <= t["height"] + 0.5, t
            for chart in {t["chart"] for t in found["texts"]}:
                ticks = sorted((t for t in found["texts"] if t["chart"] == chart and t["cls"] == "tick x"),
                               key=lambda t: t["left"])  # fmt: skip
                for a, b in zip(ticks, ticks[1:], strict=False):
                    assert a["right"] <= b["left"], (chart, a["text"], b["text"])  # step labels never overlap
                assert all("e+" not in t["text"] for t in ticks)
            hidden = [n for n in found["notes"] if n["text"].startswith("showing 5 of 9 checkpoints")]
            assert hidden and hidden[0]["height"] > 0 and hidden[0]["right"] <= found["pageWidth"]
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
