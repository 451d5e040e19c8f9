"""Task registry: task name → solver class (module:Class), imported on demand."""

from __future__ import annotations

import importlib

from tunesmith.errors import UserError

TASKS: dict[str, str] = {
    "codec": "tunesmith.tasks.codec:CodecSolver",
    "lm": "tunesmith.tasks.lm:LMSolver",
    "midi": "tunesmith.tasks.midi:MidiSolver",
    "toy": "tunesmith.tasks.toy:ToySolver",
    "tts": "tunesmith.tasks.tts:TTSSolver",
}


def solver_class(task: str):
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; tasks: {', '.join(t for t in TASKS if t != 'toy')}")
    module_name, class_name = TASKS[task].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise UserError(f"task {task!r} is not available in this build") from None
        raise
    return getattr(module, class_name)


def build_solver(task: str, preset: str, overrides: list[str], *, runs_dir=None, fresh=False, force=False):
    """Resolve the config, open (or reopen) the run folder and build the task's solver."""
    import os

    from tunesmith.artifacts.runs import open_run
    from tunesmith.config import resolve
    from tunesmith.engine.distributed import adopt_slurm_env

    cls = solver_class(task)
    resolved = resolve(task, cls.config_class, preset, overrides)
    adopt_slurm_env()  # a task of `srun` without torchrun: RANK and friends from Slurm's variables
    is_main = int(os.environ.get("RANK", "0")) == 0
    if fresh and not is_main:
        import time

        time.sleep(1.0)  # let rank 0 delete first
    run = open_run(resolved, runs_dir, fresh=fresh and is_main, force=force, is_main=is_main)
    return cls(resolved, run)
