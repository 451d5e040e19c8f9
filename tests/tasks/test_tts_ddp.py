"""Real processes for the tts task: a 2-process gloo DDP full fine-tune of a model whose text head is frozen
(the "unused parameters" failure: DDP with ``find_unused_parameters=False`` must never wait for a trainable
parameter that gets no gradient) equals one process with the same global batch; and a run killed with
SIGKILL mid-epoch resumes to the uninterrupted run's per-update losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.resume import assert_resumes_to, kill_mid_epoch, step_losses
from support.tts import make_higgs_dir, make_speech_data
from tunesmith.artifacts import checkpoint as ckpt

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TUNESMITH_THREADS": "1", "TUNESMITH_NO_PROGRESS": "1"}
COMMON = [
    "train.log.progress=false",
    "train.log.tensorboard=false",
    "train.log.every_steps=1",
    "finetune.lora.dropout=0",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts_proc")
    return make_speech_data(root, speakers=2, clips=6), make_higgs_dir(root / "higgs", use_text_head=True)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], env=ENV, capture_output=True, text=True, **kwargs)


def run_dir_of(proc: subprocess.CompletedProcess) -> Path:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"])


# Adam's eps raised: a near-zero gradient would otherwise turn a last-bit reduction difference into a ±lr step
FULL = ["finetune.mode=full", "optim.eps=1e-4", "train.epochs=1", "train.updates_per_epoch=3", "generate.num_samples=0"]


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    """One process, global batch 4."""
    data, higgs = setup
    runs = tmp_path_factory.mktemp("single")
    args = ["train", "tts", "tiny", f"data={data}", f"init_from=hf:{higgs}", *FULL, *COMMON, "dataset.batch_size=4"]
    return run_dir_of(cli(*args, "--runs-dir", str(runs), "--json", timeout=600))


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_with_a_frozen_text_head_equal_one_process(setup, single, tmp_path, sharding):
    data, higgs = setup
    args = [f"data={data}", f"init_from=hf:{higgs}", *FULL, *COMMON]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29561"]
    fsdp = f"train.fsdp={str(sharding == 'fsdp').lower()}"
    runs = ["--runs-dir", str(tmp_path / sharding), "--json"]
    command = ["-m", "tunesmith", "train", "tts", "tiny", *args, "dataset.batch_size=2", fsdp, *runs]
    proc = subprocess.run([*launch, *command], env=ENV, capture_output=True, text=True, timeout=600)
    ddp = run_dir_of(proc)
    assert "find_unused_parameters" not in proc.stderr and "Expected to have finished reduction" not in proc.stderr
    a = ckpt.load_weights(single / "checkpoints" / "last")
    b = ckpt.load_weights(ddp / "checkpoints" / "last")
    source = ckpt.load_tensors(higgs / "model.safetensors")
    assert torch.equal(b["text_lm_head.weight"], source["text_lm_head.weight"])  # frozen: no text loss
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(a["audio_lm_head.weight"], source["audio_lm_head.weight"])
    one, two = step_losses(single), step_losses(ddp)
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step


def test_sigkill_mid_epoch_resumes_to_the_same_losses(setup, tmp_path):
    data, higgs = setup
    args = ["train", "tts", "tiny", f"data={data}", f"init_from=hf:{higgs}", "train.epochs=3",
            "train.updates_per_epoch=8", "dataset.batch_size=2", "dataset.reference=same_speaker",
            "generate.num_samples=0", *COMMON]  # fmt: skip
    reference = run_dir_of(cli(*args, "--runs-dir", str(tmp_path / "ref"), "--json", timeout=600))
    expected = step_losses(reference)
    assert sorted(expected) == list(range(1, 25))
    runs = tmp_path / "killed"
    run_dir = runs / "tts" / reference.name
    # mid-epoch, past the first checkpoint (epoch 1 ends at step 8)
    killed_at = kill_mid_epoch(args, runs, run_dir, ENV, past_step=9, steps_per_epoch=8)
    assert killed_at is not None, "the run finished before it could be killed; make it longer"
    assert_resumes_to(args, runs, run_dir, ENV, expected)
