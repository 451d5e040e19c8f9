"""State registry: every stateful piece of a run under one name, saved and restored by one loop.

The engine registers the model's weights, the optimizers, scalers, EMA, stability guard, counters
and RNG streams; a task registers its own state (gradient-balancer averages, a token counter...)
into the ``extra`` group. :meth:`StateRegistry.save` walks the entries once and returns the
weights (one ``<name>.safetensors`` each) and the plain ``state.pt`` dict; :meth:`StateRegistry.load`
walks them once, in the same (registration) order, to resume. A dotted key or a :meth:`group`
nests: ``"optimizers.model"`` is ``state["optimizers"]["model"]``. The dict keeps registration order.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

log = logging.getLogger("tunesmith.train")

SKIP = object()  # ``missing=SKIP``: an entry absent from a stored state is left as it is
REQUIRED = object()  # ``missing=REQUIRED``: an absent entry is an error


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


@dataclasses.dataclass
class _Entry:
    save: Callable[[], Any]
    load: Callable[[Any], None] | None
    missing: Any = SKIP
    weights: bool = False  # a tensor dict saved as <key>.safetensors instead of inside state.pt


class StateRegistry:
    """Named stateful things in registration order (see module doc)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry | StateRegistry] = {}

    def __contains__(self, key: str) -> bool:
        head, _, rest = key.partition(".")
        node = self._entries.get(head)
        if rest:
            return isinstance(node, StateRegistry) and rest in node
        return node is not None

    def names(self) -> list[str]:
        """Every entry's dotted key (groups expanded), in order."""
        out = []
        for key, node in self._entries.items():
            out += [f"{key}.{k}" for k in node.names()] if isinstance(node, StateRegistry) else [key]
        return out

    def group(self, key: str) -> StateRegistry:
        """The sub-registry ``key`` (created, in order, on first use): saved as a dict even when empty."""
        head, _, rest = key.partition(".")
        node = self._entries.setdefault(head, StateRegistry())
        if not isinstance(node, StateRegistry):
            raise KeyError(f"state entry {head!r} is not a group")
        return node.group(rest) if rest else node

    def _add(self, key: str, entry: _Entry) -> None:
        parent, _, leaf = key.rpartition(".")
        registry = self.group(parent) if parent else self
        if leaf in registry._entries:
            raise KeyError(f"state entry {key!r} is registered twice")
        registry._entries[leaf] = entry

    def register(self, key: str, obj: Stateful, *, missing: Any = SKIP) -> None:
        """``obj.state_dict()`` saved under ``key``; ``obj.load_state_dict`` on resume."""
        self._add(key, _Entry(obj.state_dict, obj.load_state_dict, missing))

    def register_value(
        self,
        key: str,
        get: Callable[[], Any],
        set: Callable[[Any], None] | None = None,  # noqa: A002
        *,
        missing: Any = SKIP,
    ) -> None:
        """A value read by ``get()`` on save and handed to ``set(value)`` on resume (``None``: save only).

        ``missing``: what ``set`` receives when a stored state lacks the key (``SKIP``: not called,
        ``REQUIRED``: an error)."""
        self._add(key, _Entry(get, set, missing))

    def register_weights(
        self,
        name: str,
        get: Callable[[], dict[str, torch.Tensor] | None],
        set: Callable[[dict], None] | None = None,  # noqa: A002
    ) -> None:
        """Tensors saved as ``<name>.safetensors`` (``get`` may return None: no file); ``set`` on resume."""
        if "." in name:
            raise ValueError(f"weights name {name!r}: no dots (it is a file name)")
        self._add(name, _Entry(get, set, REQUIRED, weights=True))

    def save(self, *, weights: bool = True) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        """One pass over the entries → (file stem → tensors, plain ``state.pt`` dict).

        Every rank calls this (an entry may use collectives); ``weights=False`` skips the weight entries
        (ranks that write nothing, unless the weights are sharded)."""
        files: dict[str, dict[str, torch.Tensor]] = {}
        state: dict[str, Any] = {}
        for key, node in self._entries.items():
            if isinstance(node, StateRegistry):
                sub_files, state[key] = node.save(weights=weights)
                files.update(sub_files)
            elif node.weights:
                tensors = node.save() if weights else None
                if tensors is not None:
                    files[key] = tensors
            else:
                state[key] = node.save()
        return files, state

    def load(self, state: dict, read_weights: Callable[[str], dict[str, torch.Tensor]], where: str = "") -> None:
        """One pass over the entries: weights through ``read_weights(name)``, the rest from ``state``."""
        for key, node in self._entries.items():
            if isinstance(node, StateRegistry):
                node.load(state.get(key) or {}, read_weights, f"{where}{key}.")
            elif node.load is None:
                continue
            elif node.weights:
                node.load(read_weights(key))
            elif key in state:
                node.load(state[key])
            elif node.missing is REQUIRED:
                raise KeyError(f"the checkpoint's state has no {where}{key!r}")
            elif node.missing is not SKIP:
                node.load(node.missing)


# --------------------------------------------------------------------------- weights (FSDP-aware)


def module_state(module: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of ``module`` on the CPU."""
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], sharded: bool) -> None:
    if not sharded:
        module.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))


class OptimizerState:
    """Stateful view of an optimizer: its full state dict, gathered/scattered under FSDP."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> None:
        self.module, self.optimizer, self.sharded = module, optimizer, sharded

    def state_dict(self) -> dict:
        if not self.sharded:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.module, self.optimizer, options=options)

    def load_state_dict(self, state: dict) -> None:
        if not self.sharded:
            self.optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(self.module, self.optimizer, state, options=options)


def load_init_weights(model: nn.Module, source: str) -> None:
    """``init_from=``: the best (or only) weights of a run, checkpoint or model dir into ``model``
    (non-strict: parameters missing from the source keep their init; both lists are logged)."""
    from tunesmith.artifacts import checkpoint as ckpt

    folder = ckpt.find_checkpoint(source, which="best")
    weights = ckpt.load_weights(folder, "model")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    log.info("init_from %s: loaded %d tensors", folder, len(weights) - len(unexpected))
    if missing:
        log.warning("init_from: %d parameters not in the source keep their init: %s", len(missing), missing[:8])
    if unexpected:
        log.warning("init_from: %d source tensors unused: %s", len(unexpected), unexpected[:8])


# --------------------------------------------------------------------------- RNG streams


def rng_state() -> dict:
    """This process's torch, python, numpy (and CUDA) RNG states as plain data."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RankRNG:
    """Stateful: every rank's RNG states (a list indexed by rank, gathered on save — a collective)."""

    def __init__(self, rank: int, world_size: int, distributed: bool) -> None:
        self.rank, self.world_size, self.distributed = rank, world_size, distributed

    def state_dict(self) -> list[dict]:
        mine = rng_state()
        if not self.distributed:
            return [mine]
        gathered: list = [None] * self.world_size
        torch_dist.all_gather_object(gathered, mine)
        return gathered

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) == self.world_size:
            set_rng_state(states[self.rank])
        else:
            log.warning(
                "resuming with %d ranks instead of %d: data order is kept, RNG streams are not",
                self.world_size,
                len(states),
            )


def _tuples(obj):
    if isinstance(obj, (list, tuple)):
        return tuple(_tuples(v) for v in obj)
    return obj
