"""The one-command demo: its orchestration end to end with --quick budgets, its resume, and its summary helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith.demo import (
    FULL,
    QUICK,
    Demo,
    codec_code_use,
    codec_sisnr,
    generation_speed,
    health_notes,
    lm_valid_ce,
)


def _console():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"))  # noqa: SIM115


@pytest.mark.parametrize("budget", [FULL, QUICK], ids=["full", "quick"])
def test_budgets_resolve_to_valid_configs_and_run_folders(tmp_path, budget):
    """Every override the demo passes is a real config key; the run folder it predicts is train's."""
    from tunesmith.artifacts.runs import signature
    from tunesmith.config import resolve
    from tunesmith.tasks import solver_class

    demo = Demo(tmp_path / "out", budget, "cpu", _console())
    codec_run = demo._run_dir("codec", demo.codec_overrides())
    resolved = resolve("codec", solver_class("codec").config_class, "tiny", demo.codec_overrides())
    assert resolved.config.train.epochs * resolved.config.train.updates_per_epoch == budget.codec_epochs * (
        budget.codec_updates
    )
    assert codec_run == tmp_path / "out" / "runs" / "codec" / signature(resolved)
    lm = resolve("lm", solver_class("lm").config_class, "tiny", demo.lm_overrides(codec_run))
    assert lm.config.codec == str(codec_run) and lm.config.dataset.batch_size == budget.lm_batch
    assert lm.config.optim.warmup_steps <= budget.lm_epochs * budget.lm_updates


def test_full_budget_fits_the_time_target():
    """Per-update costs measured on the 2-core box with another job running (idle: ~25 % less), validation
    included: codec 0.088 s per reconstruction-only update and ~0.3 s once the discriminator trains too,
    LM 0.445 s per update. Idle, two threads, the whole demo (600 LM updates) took 4.9 min."""
    from tunesmith.config import resolve
    from tunesmith.tasks import solver_class

    codec = resolve("codec", solver_class("codec").config_class, "tiny", []).config
    codec_updates = FULL.codec_epochs * FULL.codec_updates
    reconstruction = min(codec_updates, codec.loss.adversarial_start)
    seconds = 0.088 * reconstruction + 0.3 * (codec_updates - reconstruction) + 0.445 * FULL.lm_epochs * FULL.lm_updates
    assert seconds < 10 * 60  # leaves ~5 minutes for data, encoding, generation and review within 15


def test_summary_helpers_read_run_files(tmp_path):
    codec, lm, gen = tmp_path / "codec", tmp_path / "lm", tmp_path / "gen"
    for folder in (codec, lm, gen):
        folder.mkdir()
    (codec / "history.jsonl").write_text(
        json.dumps({"stage": "evaluate", "epoch": 1, "step": 5, "sisnr": -3.0})
        + "\n"
        + json.dumps(
            {"stage": "evaluate", "epoch": 2, "step": 10, "sisnr": 4.5, "code_ppl_q0": 200.0, "code_ppl_q1": 9.0}
        )
        + "\n"
    )
    (codec / "run.json").write_text(json.dumps({"config": {"model": {"bins": 256}}}))
    (lm / "history.jsonl").write_text(
        "".join(
            json.dumps({"stage": "valid", "epoch": e, "step": 10 * e, "loss": loss}) + "\n"
            for e, loss in [(1, 5.0), (2, 4.0), (3, 4.2)]
        )
    )
    lines = [{"audio_seconds": 5.0, "seconds": 2.0}, {"audio_seconds": 5.0, "seconds": 3.0}]
    (gen / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"audio_sec')
    assert codec_sisnr(codec) == 4.5
    assert codec_code_use(codec) == {"perplexity": [200.0, 9.0], "bins": 256}
    assert codec_code_use(lm) is None
    ce = lm_valid_ce(lm)
    assert ce["ce"] == 4.0 and ce["epoch"] == 2 and ce["first_ce"] == 5.0 and abs(ce["ppl"] - 54.598) < 1e-3
    assert generation_speed(gen) == {"items": 2, "audio_seconds": 10.0, "seconds": 5.0, "real_time_factor": 2.0}
    assert codec_sisnr(tmp_path) is None and lm_valid_ce(tmp_path) is None and generation_speed(tmp_path) is None
    assert health_notes({"codec_sisnr_db": 4.5, "lm_valid_ce": ce}) == []
    collapsed = {"codec_sisnr_db": -46.0, "lm_valid_ce": {**ce, "ppl": 1.0004}, "codec_codes": codec_code_use(codec)}
    notes = health_notes(collapsed)
    assert [n.split()[0] for n in notes] == ["codec", "codec", "LM"] and "codebook(s) [1]" in notes[1]


def test_unwritable_output_stops_with_a_message(tmp_path, capsys):
    from tunesmith.demo import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--quick", "--out", str(blocker / "demo")]) == 2
    assert "demo stopped" in capsys.readouterr().out


def _demo(out: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "COLUMNS": "200"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith.demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        umask=0o022,  # as the first run's: the folder is shared with tests that check file permissions
    )
    return proc, time.perf_counter() - start


@pytest.mark.slow
def test_quick_demo_runs_the_whole_chain_and_resumes(quick_demo):
    out = quick_demo.out  # the first run: tests/conftest.py's session fixture (umask 022), shared with other tests
    first, first_seconds = quick_demo.proc, quick_demo.seconds
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == [
        "synthetic dataset",
        "tiny codec",
        "token cache",
        "tiny text-to-music LM",
        "generate prompts",
        "LM review page",
        "codec review page",
    ]
    for stage in summary["stages"]:
        assert stage["command"].startswith("tunesmith ")
    assert isinstance(summary["codec_sisnr_db"], float)
    assert summary["lm_valid_ce"]["ce"] > 0 and summary["generation"]["real_time_factor"] > 0
    assert summary["generation"]["items"] == QUICK.num_prompts
    assert len(list((out / "generated").glob("*.wav"))) == QUICK.num_prompts
    for page in summary["pages"].values():
        text = Path(page).read_text()
        # charts, or (the quick codec run measures each metric once) the table of single measurements
        assert "<audio" in text and ("<svg" in text or "Measured once so far" in text)
    for words in ("Open these", summary["pages"]["lm"], "tunesmith prepare ~/Music", "codec SI-SNR", "LM valid CE"):
        assert words in first.stdout
    made = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}

    second, second_seconds = _demo(out)  # resumes: every stage finds its work done
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "6 already done" in second.stdout and "2 already done, 0 to generate" in second.stderr + second.stdout
    assert "0 samples made" in second.stdout and "resumed from" in second.stdout + second.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == made  # nothing redone
    again = json.loads((out / "summary.json").read_text())
    assert again["lm_valid_ce"] == summary["lm_valid_ce"] and again["codec_sisnr_db"] == summary["codec_sisnr_db"]
    assert second_seconds < first_seconds
    print(f"\nquick demo: {first_seconds:.0f} s, resumed run {second_seconds:.0f} s")
