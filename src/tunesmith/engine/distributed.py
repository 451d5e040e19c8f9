"""Process groups for `torchrun` launches: DDP with gloo on CPU and NCCL on GPU."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``gpu[07-09,12],cpu01`` → ``gpu07``."""
    prefix, _, ranges = nodelist.split(",", 1)[0].partition("[")
    if not ranges:
        return prefix
    return prefix + ranges.split(",", 1)[0].split("-", 1)[0].rstrip("]")


def torchrun_env_from_slurm(environ: dict[str, str] | None = None) -> dict[str, str]:
    """torchrun's variables for a task that ``srun`` started (one process per task, no torchrun):
    RANK ← SLURM_PROCID, WORLD_SIZE ← SLURM_STEP_NUM_TASKS, LOCAL_RANK ← SLURM_LOCALID, MASTER_ADDR ← the
    step's first node, MASTER_PORT ← 20000 + job id mod 20000 (the same on every task). Empty when
    torchrun already set them or the step has a single task."""
    env = os.environ if environ is None else environ
    world = int(env.get("SLURM_STEP_NUM_TASKS") or "1")
    if "RANK" in env or "SLURM_PROCID" not in env or world <= 1:
        return {}
    per_node = (env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_NTASKS_PER_NODE") or "1").split("(")[0]
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "LOCAL_WORLD_SIZE": per_node.split(",")[0],
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodes),
        "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID") or "0") % 20000),
    }


def adopt_slurm_env() -> None:
    """Under ``srun`` without torchrun: set torchrun's variables from Slurm's (see torchrun_env_from_slurm)."""
    os.environ.update(torchrun_env_from_slurm())


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that torchrun (or srun, see adopt_slurm_env) describes in the environment
    (no-op when alone)."""
    adopt_slurm_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor (a no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, src: int = 0):
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def main_rank_first(is_main: bool, make: Callable[[], T]) -> T:
    """``make()`` on the main rank, then, once it is done, on the others: the main rank builds a shared
    artefact (a token cache, an import) and the others open the finished one instead of racing it."""
    if is_main:
        result = make()
    barrier()
    if not is_main:
        result = make()
    return result


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
