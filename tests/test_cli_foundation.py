"""The `tunesmith` command: help, doctor, runs, export/verify, config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tunesmith.cli import main
from tunesmith.models.export import export_tunesmith, verify_model_dir
from tunesmith.tasks import build_solver

ENV = {**os.environ, "TUNESMITH_NO_PROGRESS": "1"}


def test_every_command_module_imports():
    import importlib

    from tunesmith.cli import COMMAND_MODULES

    for name in COMMAND_MODULES:
        importlib.import_module(name)  # a broken command must fail here, not only warn at run time


def test_help_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("doctor", "train", "runs", "export", "verify"):
        assert command in out


def test_doctor_reports_versions_and_features():
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "doctor", "--json"], capture_output=True, text=True, env=ENV, check=True
    )
    report = json.loads(proc.stdout)
    assert report["torch"].startswith("2.") and report["precision_auto"] in ("fp32", "bf16", "fp16")
    assert report["features"]["training engine"]["ok"] is True
    for status in report["features"].values():
        assert status["ok"] or status["fix"].startswith("pip install")


def test_config_typo_is_a_clean_cli_error(tmp_path, capsys):
    code = main(["train", "toy", "default", "optim.lrr=1", "--runs-dir", str(tmp_path)])
    assert code == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err


def test_runs_list_and_info(tmp_path, capsys):
    solver = build_solver("toy", "default", ["optim.lr=0.02"], runs_dir=tmp_path)
    solver.fit()
    assert main(["runs", "list", "--runs-dir", str(tmp_path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["status"] == "finished" and rows[0]["delta"] == {"optim.lr": 0.02}
    assert main(["runs", "info", solver.run.signature[:5], "--runs-dir", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 15 and info["best"]["metric"] == "loss" and info["last_checkpoint"]


def test_export_verify_and_precise_corruption_messages(tmp_path, capsys):
    solver = build_solver("toy", "default", [], runs_dir=tmp_path / "runs")
    solver.fit()
    out = export_tunesmith(solver.run.dir, tmp_path / "model")
    assert verify_model_dir(out) == []
    assert main(["verify", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "tunesmith-toy" and config["format_version"] == 1
    # a deployment that lost model_type
    broken = dict(config)
    del broken["model_type"]
    (out / "config.json").write_text(json.dumps(broken))
    assert any("no model_type" in p for p in verify_model_dir(out))
    (out / "config.json").write_text(json.dumps(config))
    assert any("config.json" in p and "altered" in p for p in verify_model_dir(out))  # rewritten file differs
    export_tunesmith(solver.run.dir, out, force=True)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert any("model.safetensors" in p and "truncated" in p for p in verify_model_dir(out))
    assert main(["verify", str(out)]) == 1
    (out / "config.json").write_text("{not json")
    assert "not valid JSON" in verify_model_dir(out)[0]


def test_download_never_imports_torch_for_the_thread_policy(tmp_path):
    """`tunesmith download` runs no torch: the thread policy must not import it (seconds at start-up)."""
    code = (
        "import sys\n"
        "from tunesmith.cli import main\n"
        f"rc = main(['download', 'fma', '--to', {str(tmp_path / 'dl')!r}, '--checksums', {str(tmp_path / 'no')!r}])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr
    assert "threads:" in out.stderr  # the policy is still chosen and logged
