"""Graceful stop (engine.signals): real signals on a real `tunesmith train`, then the same command resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tunesmith.engine.signals import STOPPED_EXIT_CODE, StopRequest

ENV = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
UPDATES = 200
ARGS = [
    "train",
    "toy",
    "default",
    "train.epochs=2",
    f"train.updates_per_epoch={UPDATES}",
    "dataset.num_items=400",
    "model.dim=256",
    "dataset.crop=48",
]


def history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def step_losses(run_dir: Path) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in history(run_dir) if h["stage"] == "train_step"}


def stage_losses(run_dir: Path, stage: str) -> list[float]:
    return [h["loss"] for h in history(run_dir) if h["stage"] == stage]


def tunesmith(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *args], env=ENV, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the same command."""
    runs = tmp_path_factory.mktemp("ref")
    proc = tunesmith(*ARGS, "--runs-dir", str(runs), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Path(json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"])


def signal_mid_epoch(runs: Path, run_name: str, sig: signal.Signals) -> tuple[subprocess.CompletedProcess, int]:
    """Start the run, send ``sig`` once it is well inside epoch 1, wait for it to end; (result, step signalled)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *ARGS, "--runs-dir", str(runs)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = runs / "toy" / run_name
    deadline = time.time() + 300
    sent = None
    while time.time() < deadline and proc.poll() is None:
        losses = step_losses(run_dir)
        if losses and 20 <= max(losses) <= UPDATES // 2:
            proc.send_signal(sig)
            sent = max(losses)
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    assert sent is not None, "the run ended before it could be signalled; make it longer"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), sent


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_signal_stops_after_the_update_and_the_same_command_resumes_exactly(tmp_path, reference, sig):
    runs = tmp_path / "runs"
    stopped, sent = signal_mid_epoch(runs, reference.name, sig)
    assert stopped.returncode == STOPPED_EXIT_CODE, stopped.stderr[-2000:]
    assert f"stopped by {sig.name}" in stopped.stderr and "Traceback" not in stopped.stderr
    run_dir = runs / "toy" / reference.name
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["reason"] == f"stopped by {sig.name}"
    # the checkpoint holds every update done: no update after it, none lost before it; mid-epoch
    state = torch.load(run_dir / "checkpoints" / "last" / "state.pt", weights_only=True)
    done = max(step_losses(run_dir))
    assert state["step"] == status["step"] == done and sent <= done < UPDATES
    assert (state["epoch"], state["micro_step"]) == (0, done)
    assert "epoch_progress" in state

    resumed = tunesmith(*ARGS, "--runs-dir", str(runs))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step {done} (update {done} of epoch 1)" in resumed.stderr
    got, expected = step_losses(run_dir), step_losses(reference)
    assert sorted(got) == sorted(expected) == list(range(1, 2 * UPDATES + 1))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), step
    # the epoch summaries cover the whole epoch, as if never stopped
    assert stage_losses(run_dir, "train") == pytest.approx(stage_losses(reference, "train"), rel=1e-6)
    assert stage_losses(run_dir, "valid") == pytest.approx(stage_losses(reference, "valid"), rel=1e-6)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert "reason" not in json.loads((run_dir / "status.json").read_text())


def test_second_ctrl_c_stops_at_once_and_other_repeats_are_ignored():
    with StopRequest() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.signal_name == "SIGTERM"
        signal.raise_signal(signal.SIGUSR1)  # torchrun forwarding its own SIGTERM, a second scheduler signal
        assert stop.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_signal_before_training_stops_without_a_checkpoint(tmp_path):
    """A stop requested during set-up (or valid) exits at the next boundary with nothing new to save."""
    from tunesmith.engine.signals import TrainingStopped
    from tunesmith.tasks import build_solver

    solver = build_solver("toy", "default", [], runs_dir=tmp_path)
    original = solver.build_datasets

    def build_then_signal():
        signal.raise_signal(signal.SIGTERM)
        return original()

    solver.build_datasets = build_then_signal
    with pytest.raises(TrainingStopped) as info:
        solver.fit()
    assert info.value.step == 0 and info.value.checkpoint is None
    assert json.loads((solver.run.dir / "status.json").read_text())["state"] == "interrupted"
    assert not (solver.run.dir / "checkpoints" / "last").exists()


def test_a_stop_at_once_marks_the_run_interrupted_not_failed(tmp_path):
    """A second Ctrl-C (KeyboardInterrupt) leaves no new checkpoint; the status says interrupted."""
    from tunesmith.tasks import build_solver

    solver = build_solver("toy", "default", [], runs_dir=tmp_path)
    original = solver.train_update

    def update_then_interrupt(micro_batches):
        if solver.step == 7:
            raise KeyboardInterrupt
        return original(micro_batches)

    solver.train_update = update_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        solver.fit()
    status = json.loads((solver.run.dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["step"] == 7 and "second Ctrl-C" in status["reason"]


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=``rank`` (Linux /proc), or None while it is not started."""
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers through /proc")
def test_ddp_a_signal_on_one_rank_stops_every_rank_after_the_same_update(tmp_path):
    """SIGTERM to rank 1 only: both ranks stop after the same update (the flag is all-reduced), rank 0 writes
    the checkpoint, and the resumed 2-process run has the per-step losses of one never stopped."""
    updates = UPDATES // 2
    common = ["train.epochs=2", f"train.updates_per_epoch={updates}", "dataset.num_items=400", "model.dim=256"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29541"]
    command = [*launch, "-m", "tunesmith", "train", "toy", "default", "dataset.batch_size=2", *common]
    whole = subprocess.run([*command, "--runs-dir", str(tmp_path / "whole")], env=ENV, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]
    (ref_dir,) = (tmp_path / "whole" / "toy").iterdir()
    command += ["--runs-dir", str(tmp_path / "ddp")]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, sent = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        runs = list((tmp_path / "ddp" / "toy").glob("*/history.jsonl"))
        losses = step_losses(runs[0].parent) if runs else {}
        if losses and 20 <= max(losses) <= updates // 2:
            pid = _rank_pid(proc.pid, 1)
            assert pid is not None
            os.kill(pid, signal.SIGTERM)
            sent = max(losses)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    assert sent is not None, "the run ended before it could be signalled; make it longer"
    assert proc.returncode != 0 and "stopped by a signal on another rank" in err, err[-3000:]
    run_dir = runs[0].parent
    status = json.loads((run_dir / "status.json").read_text())
    state = torch.load(run_dir / "checkpoints" / "last" / "state.pt", weights_only=True)
    done = max(step_losses(run_dir))
    assert status["state"] == "interrupted" and state["step"] == status["step"] == done < updates
    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, expected = step_losses(run_dir), step_losses(ref_dir)
    assert sorted(got) == sorted(expected)
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), step


def test_the_signal_handler_never_goes_through_logging(capfd):
    """A handler runs between two bytecodes of the main thread, possibly inside its write to stderr, where a
    logging call fails ("reentrant call inside BufferedWriter" → "--- Logging error ---" and a traceback, seen on
    CI). The notice goes out with one os.write instead; the flag is set either way."""
    import logging

    from tunesmith.engine.signals import StopRequest

    class Reentrant(logging.Handler):
        def emit(self, record):
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

    logger = logging.getLogger("tunesmith.train")
    handler = Reentrant()
    logger.addHandler(handler)
    try:
        stop = StopRequest()
        stop._handle(signal.SIGTERM, None)
        stop._handle(signal.SIGTERM, None)
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    assert stop.signal_name == "SIGTERM"
    assert "SIGTERM received: finishing the current update" in err and "already stopping" in err
    assert "Logging error" not in err and "Traceback" not in err
