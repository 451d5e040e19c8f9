"""A torchrun worker for the FSDP unit tests (no tests here).

    python -m torch.distributed.run --nproc-per-node 2 tests/support/fsdp_worker.py REPORT RUNS TASK PRESET [k=v ...]

trains ``TASK PRESET k=v...`` in the runs folder RUNS like ``tunesmith train`` does, then rank 0 writes REPORT
(JSON): the run folder, every module of the trained (wrapped) model that is an FSDP unit — its qualified name
("" for the root) → its class name — and ``peak_gathered``: the most units other than the root whose parameters
were gathered (plain tensors, not DTensor shards) at once, seen at the end of any unit's forward.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import torch
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from tunesmith.engine.distributed import cleanup
    from tunesmith.tasks import build_solver

    torch.set_num_threads(1)
    report, runs, task, preset, *overrides = argv
    solver = build_solver(task, preset, overrides, runs_dir=Path(runs))
    peak = [0]

    def after_forward(module: torch.nn.Module, args, output) -> None:  # global hooks run before FSDP's reshard
        if isinstance(module, FSDPModule) and module is not solver.model:
            units = [m for m in solver.model.modules() if isinstance(m, FSDPModule) and m is not solver.model]
            peak[0] = max(peak[0], sum(any(not isinstance(p, DTensor) for p in own_parameters(m)) for m in units))

    def own_parameters(unit: torch.nn.Module) -> list[torch.Tensor]:  # not those of the units nested inside
        nested = {id(p) for m in unit.modules() if m is not unit and isinstance(m, FSDPModule) for p in m.parameters()}
        return [p for p in unit.parameters() if id(p) not in nested]

    handle = torch.nn.modules.module.register_module_forward_hook(after_forward)
    result = solver.fit()
    handle.remove()
    if solver.dist.is_main:
        units = {name: type(m).__name__ for name, m in solver.model.named_modules() if isinstance(m, FSDPModule)}
        out = {"run_dir": result["run_dir"], "step": result["step"], "units": units, "peak_gathered": peak[0]}
        Path(report).write_text(json.dumps(out, indent=1) + "\n")
    cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
