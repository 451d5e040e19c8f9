"""The state registry (engine.state) and the update primitive (engine.update)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from torch import nn

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.engine.precision import SafeScaler
from tunesmith.engine.state import REQUIRED, OptimizerState, StateRegistry
from tunesmith.engine.update import BackwardTarget, LossOutput, accumulate
from tunesmith.tasks import build_solver

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_v1" / "runs"
STATE_KEYS = [
    "format",
    "task",
    "step",
    "epoch",
    "micro_step",
    "world_size",
    "optimizers",
    "scalers",
    "ema",
    "stability",
    "best",
    "history",
    "history_lines",
    "rng",
    "wall_time_s",
    "extra",
]


class Counter:
    def __init__(self, n: int = 0) -> None:
        self.n = n

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.n = state["n"]


def _pieces(seed: int):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt, Counter(seed), {"value": float(seed)}


def _registry(model, opt, counter, box) -> StateRegistry:
    s = StateRegistry()
    s.register_weights("model", lambda: {k: v.clone() for k, v in model.state_dict().items()}, model.load_state_dict)
    s.register_value("value", lambda: box["value"], lambda v: box.update(value=v), missing=REQUIRED)
    s.group("optimizers").register("model", OptimizerState(model, opt, sharded=False))
    s.group("extra").register("counter", counter)
    return s


def test_save_then_load_restores_every_registered_item() -> None:
    source = _pieces(1)
    weights, state = _registry(*source).save()
    assert list(weights) == ["model"] and list(state) == ["value", "optimizers", "extra"]
    assert _registry(*source).names() == ["model", "value", "optimizers.model", "extra.counter"]
    model, opt, counter, box = target = _pieces(2)
    _registry(*target).load(state, lambda name: weights[name])
    for name, tensor in source[0].state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)
    assert opt.state_dict()["state"][0]["step"] == source[1].state_dict()["state"][0]["step"]
    torch.testing.assert_close(opt.state_dict()["state"][0]["exp_avg"], source[1].state_dict()["state"][0]["exp_avg"])
    assert (counter.n, box["value"]) == (1, 1.0)


def test_missing_entries_skip_default_or_fail() -> None:
    s = StateRegistry()
    got: dict = {}
    s.register_value("skipped", lambda: 1, lambda v: got.update(skipped=v))
    s.register_value("defaulted", lambda: 1, lambda v: got.update(defaulted=v), missing=0)
    s.load({}, lambda name: {})
    assert got == {"defaulted": 0}
    s.register_value("needed", lambda: 1, lambda v: None, missing=REQUIRED)
    with pytest.raises(KeyError, match="needed"):
        s.load({}, lambda name: {})
    with pytest.raises(KeyError, match="twice"):
        s.register_value("needed", lambda: 2)


def test_a_tasks_extra_state_comes_back_on_resume(tmp_path: Path) -> None:
    """A task registers a counter; the resumed run gets the value the checkpoint held."""
    from tunesmith.tasks.toy import ToySolver

    class Counting(ToySolver):
        def register_extra_state(self, extra: StateRegistry) -> None:
            self.counter = Counter()
            extra.register("counter", self.counter)

        def loss(self, model, batch):
            if model.training:
                self.counter.n += 1
            return super().loss(model, batch)

    def solver(epochs: int) -> Counting:
        s = build_solver("toy", "default", [f"train.epochs={epochs}"], runs_dir=tmp_path)
        s.__class__ = Counting
        return s

    first = solver(1)
    first.fit()
    assert first.counter.n == 5  # updates_per_epoch, one micro-batch each
    stored = ckpt.load_state(first.run.checkpoints_dir / "last")
    assert list(stored) == STATE_KEYS and stored["extra"] == {"counter": {"n": 5}}
    second = solver(1)  # the same command: the same run folder, resumed from its last checkpoint
    assert second.run.dir == first.run.dir
    second.setup()
    assert (second.counter.n, second.step, second.epoch) == (5, 5, 1)


@pytest.mark.parametrize("task", ["codec", "lm", "midi"])
def test_state_layout_is_the_one_old_checkpoints_have(tmp_path: Path, task: str) -> None:
    """Keys and nesting of state.pt as written by the previous version (tests/fixtures/legacy_v1)."""
    (old,) = LEGACY.glob(f"{task}/*/checkpoints/last/state.pt")
    legacy = torch.load(old, weights_only=True)
    assert list(legacy) == STATE_KEYS
    solver = build_solver("toy", "default", ["train.epochs=1"], runs_dir=tmp_path)
    solver.fit()
    new = ckpt.load_state(solver.run.checkpoints_dir / "last")
    assert list(new) == list(legacy)
    assert list(new["optimizers"]) == list(new["scalers"]) == ["model"]
    assert set(new["rng"][0]) == set(legacy["rng"][0]) - {"cuda"}
    assert list(new["stability"]) == list(legacy["stability"])


# --------------------------------------------------------------------------- update primitive


def _accumulate(model, extra, micro_batches, *, world_size: int = 1):
    scaler = SafeScaler("fp32", torch.device("cpu"))

    def closure(batch):
        x, y = batch
        per_item = ((model(x) - y) ** 2).sum(-1)  # [B]
        d = extra(x.detach()).pow(2).sum(-1)
        return LossOutput(
            per_item.sum(),
            {"_batch_mean": per_item.mean().detach(), "half": per_item[::2].sum(), "half/count": len(per_item[::2])},
            {"model": per_item.sum(), "extra": d.sum()},
        )

    targets = {
        "model": BackwardTarget(scaler),
        "extra": BackwardTarget(scaler, list(extra.parameters()), reduce_by_hand=True, loss_metric="e_loss"),
    }
    return accumulate(
        micro_batches,
        closure,
        count_targets=lambda b: int(b[0].shape[0]),
        targets=targets,
        sync_module=model,
        autocast=contextlib.nullcontext,
        world_size=world_size,
        device=torch.device("cpu"),
    )


def test_accumulated_micro_batches_equal_one_batch() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    results, grads = [], []
    for chunks in (1, 2, 4):
        torch.manual_seed(1)
        model, extra = nn.Linear(3, 2), nn.Linear(3, 2)
        result = _accumulate(model, extra, list(zip(x.chunk(chunks), y.chunk(chunks), strict=True)))
        results.append(result)
        grads.append([p.grad.clone() for p in [*model.parameters(), *extra.parameters()]])
    for result, grad in zip(results[1:], grads[1:], strict=True):
        assert result.total == 8 and result.optimizers == ["model", "extra"]
        for a, b in zip(grad, grads[0], strict=True):
            torch.testing.assert_close(a, b)
        for key in ("loss", "e_loss"):
            assert result.metrics[key] == pytest.approx(results[0].metrics[key], rel=1e-6)
    torch.manual_seed(1)
    model, extra = nn.Linear(3, 2), nn.Linear(3, 2)
    per_item = ((model(x) - y) ** 2).sum(-1)
    e_loss = extra(x).pow(2).sum(-1).mean()
    (per_item.mean() + e_loss).backward()  # the one-batch reference: means over the 8 targets
    for a, b in zip(grads[0], [p.grad for p in [*model.parameters(), *extra.parameters()]], strict=True):
        torch.testing.assert_close(a, b)
    per_item, e_loss = per_item.detach(), e_loss.detach()
    one = results[0].metrics
    assert set(one) == {"loss", "e_loss", "half", "batch_mean"}  # x/count companions are consumed
    assert one["loss"] == pytest.approx(float(per_item.mean()), rel=1e-6)
    assert one["e_loss"] == pytest.approx(float(e_loss), rel=1e-6)
    for result in results:  # the even items of every chunking are items 0, 2, 4, 6: over their count, 4
        assert result.metrics["half"] == pytest.approx(float(per_item[::2].mean()), rel=1e-6)
    assert results[2].metrics["batch_mean"] == pytest.approx(float(per_item.reshape(4, 2).mean(1).mean()), rel=1e-6)


def test_tasks_implement_only_the_task_contract() -> None:
    """No task overrides an engine method (set-up, update, epochs, checkpoints, resume)."""
    from tunesmith.engine.solver import Solver
    from tunesmith.engine.task import Task
    from tunesmith.tasks import TASKS, solver_class

    engine_only = {name for name in vars(Solver) if callable(vars(Solver)[name]) and name not in vars(Task)}
    engine_only -= {"__init__"}  # a task may add its own fields after the engine's (MIDI's tokenizer)
    assert {"setup", "train_update", "train_epoch", "valid_epoch", "save_checkpoints", "fit"} <= engine_only
    for task in TASKS:
        cls = solver_class(task)
        overridden = {name for klass in cls.__mro__[: cls.__mro__.index(Solver)] for name in vars(klass)}
        assert not overridden & engine_only, f"{task}: {sorted(overridden & engine_only)}"
