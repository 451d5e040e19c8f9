"""Task registry: task name → solver class (module:Class), imported on demand."""

from __future__ import annotations

import importlib

from tunesmith.errors import UserError

TASKS: dict[str, str] = {
    "codec": "tunesmith.tasks.codec:CodecSolver",
    "lm": "tunesmith.tasks.lm:LMSolver",
    "midi": "tunesmith.tasks.midi:MidiSolver",
    "toy": "tunesmith.tasks.toy:ToySolver",
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
