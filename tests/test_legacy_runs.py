"""Fixtures written by tunesmith at commit 7d198e6 (tests/fixtures/legacy_v1) keep working with today's code.

A prepared dataset, codec / LM / MIDI runs stopped after epoch 2 of 3, and an exported LM (with its codec):
they must still verify, resume exactly where they stopped, generate, and keep their run signatures. Only the
``tunesmith`` command line is used (``python -m tunesmith`` in subprocesses, from a copy of the fixtures), so
the test does not depend on where modules live. make_fixtures.py in that folder says how they were made.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
RUNS: dict[str, dict] = EXPECTED["runs"]


def _env() -> dict[str, str]:
    env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TUNESMITH_RUNS", None)  # runs/ under the working directory, as when the fixtures were made
    return env


def tunesmith(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``tunesmith ARGS`` run in ``cwd`` with this interpreter (and its PYTHONPATH)."""
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )


def tunesmith_all(cwd: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Several independent commands at once (each is mostly interpreter and torch start-up)."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda args: tunesmith(cwd, *args), commands))


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{' '.join(proc.args[3:])}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(ok(proc).stdout.strip().splitlines()[-1])


def history_lines(run_dir: Path) -> list[str]:
    return (run_dir / "history.jsonl").read_text().splitlines()


def step_losses(lines: list[str]) -> dict[str, float]:
    records = [json.loads(line) for line in lines]
    return {str(r["step"]): r["loss"] for r in records if r["stage"] == "train_step"}


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()  # checkpoint files may be hard links: write a new file, never alter a shared inode
    path.write_bytes(bytes(data))


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A private copy of the fixtures (runs get resumed, outputs written); their absolute paths are stale there."""
    dst = tmp_path / "legacy_v1"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("make_fixtures.py", "__pycache__"))
    return dst


def test_fixture_files_are_as_written() -> None:
    """The committed files are byte for byte what 7d198e6 wrote (no line-ending or LFS rewriting)."""
    for folder, files in EXPECTED["checksums"].items():
        for name, digest in files.items():
            assert hashlib.sha256((FIXTURE / folder / name).read_bytes()).hexdigest() == digest, f"{folder}/{name}"
    for run in RUNS.values():
        run_dir = FIXTURE / run["run_dir"]
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == run["checkpoints"]
        assert len(history_lines(run_dir)) == run["history_lines"]
        assert step_losses(history_lines(run_dir)) == run["train_step_losses"]


def test_verify_accepts_the_old_folders_and_catches_a_flipped_byte(legacy: Path) -> None:
    folders = list(EXPECTED["checksums"])
    assert "model" in folders and len(folders) == 1 + len(RUNS)
    codec_last = Path(RUNS["codec"]["run_dir"]) / "checkpoints" / "last"
    for name, target in (("broken_model", "codec/model.safetensors"), ("broken_checkpoint", "state.pt")):
        shutil.copytree(legacy / ("model" if name == "broken_model" else codec_last), legacy / name)
        flip_byte(legacy / name / target)
    results = tunesmith_all(legacy, [["verify", folder] for folder in [*folders, "broken_model", "broken_checkpoint"]])
    for folder, proc in zip(folders, results[: len(folders)], strict=True):
        assert ": ok" in ok(proc).stdout, folder
    for proc, target in zip(results[-2:], ("codec/model.safetensors", "state.pt"), strict=True):
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "checksum mismatch" in proc.stdout and Path(target).name in proc.stdout, proc.stdout


@pytest.mark.slow
def test_signatures_are_pinned(legacy: Path) -> None:
    """The run folder (runs/TASK/SIGNATURE) of each pinned command is unchanged; the fixture runs' own commands
    are checked by the resume test, which must land in their folders."""
    pinned = EXPECTED["signatures"]
    commands = [
        ["train", s["task"], s["preset"], *s["overrides"], "--runs-dir", "runs", "--print-config"] for s in pinned
    ]
    got = [Path(json.loads(ok(proc).stdout)["run_dir"]).name for proc in tunesmith_all(legacy, commands)]
    assert got == [s["signature"] for s in pinned]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["codec", "lm", "midi"])
def test_the_same_command_resumes_the_old_run(legacy: Path, task: str) -> None:
    """Epoch 3 continues from the stored epoch 2: earlier history untouched, the losses of a run never stopped."""
    run = RUNS[task]
    run_dir = legacy / run["run_dir"]
    before = history_lines(run_dir)
    result = last_json(tunesmith(legacy, "train", run["task"], run["preset"], *run["overrides"], "--json"))
    assert Path(result["run_dir"]) == Path(run["run_dir"])
    assert (result["epoch"], result["step"]) == (run["epochs"], run["epochs"] * run["updates_per_epoch"])
    after = history_lines(run_dir)
    assert after[: len(before)] == before  # a restart would have rewritten them (new times, new losses)
    assert len(after) > len(before)
    new = {k: v for k, v in step_losses(after).items() if k not in run["train_step_losses"]}
    assert new.keys() == run["continued_losses"].keys()
    for step, loss in run["continued_losses"].items():
        assert new[step] == pytest.approx(loss, rel=1e-4), step  # exact on the machine that made them
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert (run_dir / "checkpoints" / f"epoch_{run['epochs']:04d}").is_dir()


@pytest.mark.slow
def test_generate_from_the_old_lm_run_and_its_export(legacy: Path) -> None:
    common = ["--prompt", "calm ambient pad", "--duration", "0.2", "--seed", "1", "--top-k", "5", "--json"]
    from_run, from_model = tunesmith_all(
        legacy,
        [
            ["generate", RUNS["lm"]["run_dir"], *common, "--out", "out_run"],
            ["generate", EXPECTED["export"]["dir"], *common, "--out", "out_model"],
        ],
    )
    for proc in (from_run, from_model):
        summary = last_json(proc)
        assert summary["generated"] == 1 and summary["audio_seconds"] == pytest.approx(0.2)
    wavs = [sorted((legacy / out).glob("*.wav")) for out in ("out_run", "out_model")]
    assert [len(w) for w in wavs] == [1, 1]
    # the export carries the run's best weights and its codec: the same seed gives the same audio
    assert wavs[0][0].read_bytes() == wavs[1][0].read_bytes()


@pytest.mark.slow
def test_check_codec_and_generate_midi_from_the_old_runs(legacy: Path) -> None:
    prompt = sorted((legacy / "midi_src").rglob("*.midi"))[0].relative_to(legacy)
    codec, midi, data = tunesmith_all(
        legacy,
        [
            ["check", "codec", RUNS["codec"]["run_dir"], "--num-samples", "1", "--max-seconds", "0.5"]
            + ["--out", "check"],
            ["generate-midi", RUNS["midi"]["run_dir"], "--prompt", str(prompt), "--prompt-seconds", "1"]
            + ["--tokens", "16", "--out", "continued.mid", "--json"],
            ["check", "data", "data"],
        ],
    )
    ok(codec)
    report = json.loads((legacy / "check" / "report.json").read_text())
    assert len(report["clips"]) == 1 and {"sisnr", "mel", "l1"} <= set(report["mean"])
    assert (legacy / "check" / report["clips"][0]["reconstructed"]).is_file()  # read through re-rooted paths
    summary = last_json(midi)
    assert summary["notes"] > summary["prompt_notes"] > 0
    assert (legacy / "continued.mid").read_bytes()[:4] == b"MThd"
    ok(data)
