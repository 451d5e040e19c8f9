"""srun without torchrun: Slurm's task variables become torchrun's (engine.distributed), and a real
two-rank run started that way trains like torchrun's."""

from __future__ import annotations

from tunesmith.engine.distributed import first_host, torchrun_env_from_slurm


def test_slurm_task_variables_map_to_torchrun_ones() -> None:
    env = {
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456",
    }
    assert torchrun_env_from_slurm(env) == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(20000 + 123456 % 20000),
    }


def test_torchrun_or_a_single_task_is_left_alone() -> None:
    assert torchrun_env_from_slurm({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}) == {}
    assert torchrun_env_from_slurm({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "4", "RANK": "2"}) == {}
    assert torchrun_env_from_slurm({"SLURM_NTASKS": "4"}) == {}  # the batch script itself, not an srun task


def test_first_host_of_node_lists() -> None:
    assert first_host("gpu[07-09,12],cpu01") == "gpu07"
    assert first_host("cpu01,gpu[1-2]") == "cpu01"
    assert first_host("n[3]") == "n3"
    assert first_host("localhost") == "localhost"


def test_two_tasks_started_like_srun_equal_one_process_and_log_per_rank(tmp_path) -> None:
    """Two processes given only Slurm's variables (what ``srun -n 2`` sets) form one DDP run equal to one
    process with the same global batch; rank 0 logs to train.log, rank 1 to worker_1.log."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from tunesmith.artifacts import checkpoint as ckpt

    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "MASTER_"))}
    base.update(TUNESMITH_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    common = ["toy", "default", "model.dropout=0", "train.epochs=1", "train.updates_per_epoch=3"]

    def train(runs: Path, batch: int, env: dict) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "tunesmith", "--threads", "1", "train", *common, f"dataset.batch_size={batch}"]
        return subprocess.Popen([*cmd, "--runs-dir", str(runs), "--json"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    slurm = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_STEP_NODELIST": "localhost",
             "SLURM_JOB_ID": str(4000 + os.getpid() % 5000)}  # fmt: skip
    ranks = [
        train(tmp_path / "srun", 2, {**base, **slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)}) for r in (0, 1)
    ]
    single = train(tmp_path / "single", 4, base)  # alongside: the three start at once
    outs = [p.communicate(timeout=300) for p in ranks]
    assert all(p.returncode == 0 for p in ranks), outs[0][1][-2000:] + outs[1][1][-2000:]
    out, err = single.communicate(timeout=300)
    assert single.returncode == 0, err[-2000:]
    run_a = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    run_b = Path(json.loads(outs[0][0].strip().splitlines()[-1])["run_dir"])
    a, b = ckpt.load_weights(run_a / "checkpoints" / "last"), ckpt.load_weights(run_b / "checkpoints" / "last")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    assert "epoch 1 step 3" in (run_b / "train.log").read_text()
    assert (run_b / "worker_1.log").is_file() and not (run_a / "worker_1.log").exists()
