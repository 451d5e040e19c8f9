"""The one training engine: a solver base every task (codec, lm, midi) subclasses.

Stages: train (``updates_per_epoch`` optimizer updates), valid (every ``valid_every``
epochs), evaluate and generate (every N epochs and at the end). One update gathers
``grad_accum`` micro-batches per rank; the loss is normalised by the number of targets
across all of them and all ranks, so accumulation and DDP equal one big batch exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.artifacts.runs import Run, Stopwatch
from tunesmith.config import Resolved
from tunesmith.engine.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from tunesmith.engine.ema import EMA
from tunesmith.engine.precision import SafeScaler, autocast, input_dtype, move_batch, resolve_precision
from tunesmith.engine.sampler import MicroBatchSampler, TrainStream, valid_batches
from tunesmith.engine.schedule import lr_at
from tunesmith.engine.stability import StabilityGuard, TrainingAborted
from tunesmith.engine.tracking import Tracker, device_peak_flops
from tunesmith.errors import UserError
from tunesmith.runtime import EpochProgress, format_metrics, pick_device, progress_enabled

log = logging.getLogger("tunesmith.train")


@dataclasses.dataclass
class LossOutput:
    """``loss_sum``: scalar, the loss summed over the batch's targets; ``metrics``: sums likewise."""

    loss_sum: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StepInfo:
    grad_norm: float
    skipped: bool
    reason: str = ""


class PreflightError(UserError):
    """A problem found before training started; the message lists every problem and its fix."""


class _KeyedDataset(Dataset):
    """DataLoader adapter: an item per key, keys supplied by the batch sampler."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getitem__(self, key):
        return self.dataset[key]


class Solver:
    task: ClassVar[str] = "base"
    config_class: ClassVar[type | None] = None
    best_metric: ClassVar[str] = "loss"
    best_mode: ClassVar[str] = "min"
    ddp_find_unused_parameters: ClassVar[bool] = False

    # ------------------------------------------------------------------ task hooks

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_datasets(self) -> dict[str, Dataset]:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> LossOutput:
        raise NotImplementedError

    def collate(self, items: list) -> Any:
        return default_collate(items)

    def count_targets(self, batch: Any) -> int:
        first = (
            batch[0]
            if isinstance(batch, (list, tuple))
            else next(iter(batch.values()))
            if isinstance(batch, dict)
            else batch
        )
        return int(first.shape[0])

    def valid_step(self, model: nn.Module, batch: Any) -> LossOutput:
        return self.loss(model, batch)

    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        return {}

    def generate(self, model: nn.Module, epoch: int) -> None:
        return None

    def preflight(self) -> list[str]:
        return []

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}

    def flops_per_target(self) -> float | None:
        return None

    def checkpoint_meta(self) -> dict:
        """Plain data stored in every checkpoint's config.json ``meta`` and carried into exported model
        dirs (e.g. a tokenizer description), so a model decodes on its own without the training state."""
        return {}

    def extra_state(self) -> dict:
        """Task state for exact resume, stored in state.pt. Called on every rank (collectives allowed)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        return None

    def load_init_weights(self, source: str) -> None:
        """``init_from=``: weights only, into a new run. Accepts a run, checkpoint or model dir."""
        folder = ckpt.find_checkpoint(source, which="best")
        weights = ckpt.load_weights(folder, "model")
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        log.info("init_from %s: loaded %d tensors", folder, len(weights) - len(unexpected))
        if missing:
            log.warning("init_from: %d parameters not in the source keep their init: %s", len(missing), missing[:8])
        if unexpected:
            log.warning("init_from: %d source tensors unused: %s", len(unexpected), unexpected[:8])

    def param_groups(self, module: nn.Module) -> list[dict]:
        """AdamW groups: matrices and embeddings decay; biases, norms and gains do not."""
        decay, no_decay = [], []
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() >= 2 and not name.endswith(".bias") else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.optim.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]

    def build_optimizer(self, name: str, module: nn.Module) -> torch.optim.Optimizer | None:
        groups = self.param_groups(module)
        if not groups:
            return None
        o = self.cfg.optim
        fused = self.device.type in ("cuda", "cpu")  # one kernel for all parameters (5x faster step on CPU)
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused)

    # ------------------------------------------------------------------ set-up

    def __init__(self, resolved: Resolved, run: Run):
        self.resolved = resolved
        self.cfg = resolved.config
        self.run = run
        self.device = pick_device(self.cfg.train.device)
        self.dist: DistInfo = init_distributed(self.device)
        self.precision = resolve_precision(self.cfg.train.precision, self.device)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # Adam moments decay into denormals: 15-22% slower steps otherwise
        self.step = 0  # optimizer updates done
        self.epoch = 0  # epochs done
        self.micro_step = 0  # global micro-batches consumed
        self.best: dict[str, Any] = {}
        self.epoch_history: list[dict] = []
        self.tracker: Tracker | None = None
        self.ema: EMA | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.scalers: dict[str, SafeScaler] = {}
        self._watch = Stopwatch()

    @property
    def batch_size(self) -> int:
        return int(self.cfg.dataset.batch_size)

    def total_updates(self) -> int:
        t = self.cfg.train
        total = t.epochs * t.updates_per_epoch
        return min(total, t.max_steps) if t.max_steps else total

    def setup(self) -> None:
        t = self.cfg.train
        torch.manual_seed(t.seed)  # same initial weights on every rank
        random.seed(t.seed)
        np.random.seed(t.seed % 2**32)
        self.model = self.build_model().to(self.device)
        self.extras = {name: m.to(self.device) for name, m in self.extra_modules().items()}
        init_from = getattr(self.cfg, "init_from", "")
        if init_from:
            self.load_init_weights(init_from)
        self.datasets = self.build_datasets()
        if "train" not in self.datasets or len(self.datasets["train"]) == 0:
            raise UserError("the training split is empty: check the dataset (tunesmith check data DIR)")
        if t.fsdp and t.ema.enabled:
            raise UserError("train.ema.enabled=true is not supported with train.fsdp=true; disable one of them")
        # wrap first: FSDP replaces parameters, and optimizers must hold the replaced ones
        self.train_model = self._wrap(self.model)
        self.train_extras = {name: self._wrap(m) for name, m in self.extras.items()}
        for name, module in {"model": self.model, **self.extras}.items():
            opt = self.build_optimizer(name, module)
            if opt is not None:
                self.optimizers[name] = opt
                self.scalers[name] = SafeScaler(self.precision, self.device)
        if t.ema.enabled:
            self.ema = EMA(self.model, t.ema.decay)
        self.guard = StabilityGuard(**dataclasses.asdict(t.stability))
        torch.manual_seed(t.seed + 7919 * (self.dist.rank + 1))  # per-rank stream for dropout etc.
        self.tracker = Tracker(
            self.run.dir,
            enabled=self.dist.is_main,
            tensorboard=t.log.tensorboard,
            wandb_mode=t.log.wandb,
            wandb_project=t.log.wandb_project,
            run_name=f"{self.task}/{self.run.signature}",
            config=self.resolved.data,
        )
        self._resume()
        self._log_derived()

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not any(p.requires_grad for p in module.parameters()):
            return module
        t = self.cfg.train
        if self.dist.enabled:
            if t.fsdp:
                from torch.distributed.fsdp import fully_shard

                fully_shard(module)
            else:
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.device.index] if self.device.type == "cuda" else None
                module = DistributedDataParallel(
                    module, device_ids=ids, find_unused_parameters=self.ddp_find_unused_parameters
                )
        if t.compile:
            module = torch.compile(module)
        return module

    def _log_derived(self) -> None:
        t = self.cfg.train
        global_batch = self.batch_size * t.grad_accum * self.dist.world_size
        n_params = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info(
            "%s run %s: %s params (%s trainable), precision %s on %s, world %d; "
            "global batch = %d per device × %d accumulation × %d ranks = %d; %d updates in %d epochs",
            self.task,
            self.run.dir,
            f"{n_params:,}",
            f"{n_train:,}",
            self.precision,
            self.device,
            self.dist.world_size,
            self.batch_size,
            t.grad_accum,
            self.dist.world_size,
            global_batch,
            self.total_updates(),
            t.epochs,
        )

    # ------------------------------------------------------------------ preflight

    def run_preflight(self) -> None:
        """Checks that need the built model: the run folder is writable, disk space, GPU memory."""
        problems: list[str] = []
        run_dir = self.run.dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / f".write-probe-{self.dist.rank}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            problems.append(f"run folder {run_dir} is not writable ({err}); pass --runs-dir")
        else:
            import shutil

            n_params = sum(p.numel() for p in self.model.parameters()) + sum(
                p.numel() for m in self.extras.values() for p in m.parameters()
            )
            need = n_params * 4 * 3 * 2  # weights + Adam moments, twice while a checkpoint is replaced
            free = shutil.disk_usage(run_dir).free
            if free < need:
                problems.append(
                    f"only {free / 1e9:.2f} GB free under {run_dir}, a checkpoint needs ~{need / 1e9:.2f} GB"
                )
        if self.device.type == "cuda":
            problems.extend(self._cuda_memory_advice())
        if problems:
            raise PreflightError("preflight found problems:\n  - " + "\n  - ".join(problems))

    def _cuda_memory_advice(self) -> list[str]:
        """Static estimate (weights, grads, Adam: 16 bytes/param), then a real probe of one micro-batch.

        The probe runs forward and backward on one training micro-batch of the configured size
        (no optimizer step; gradients and RNG are restored), measures peak memory, and when
        it runs out of memory halves the batch until it fits, so the message can suggest a
        batch and accumulation with the same global batch instead of an OOM an hour later.
        """
        free, _ = torch.cuda.mem_get_info(self.device)
        n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        static = n_params * 16
        if static > free:
            return [
                f"the model's weights, gradients and optimizer state need ~{static / 2**30:.1f} GiB but only "
                f"{free / 2**30:.1f} GiB is free: use train.fsdp=true with several GPUs, or a smaller preset"
            ]
        fits = self._largest_fitting_batch()
        if fits >= self.batch_size:
            return []
        accum = self.cfg.train.grad_accum
        if fits == 0:
            return ["even one item per micro-batch runs out of GPU memory: use a smaller preset or train.fsdp=true"]
        new_accum = -(-self.batch_size * accum // fits)
        gpu = torch.cuda.get_device_name(self.device)
        return [
            f"dataset.batch_size={self.batch_size} runs out of GPU memory on {gpu}; "
            f"dataset.batch_size={fits} fits: use dataset.batch_size={fits} train.grad_accum={new_accum} "
            f"for (about) the same global batch"
        ]

    def _largest_fitting_batch(self) -> int:
        stream = TrainStream(len(self.datasets["train"]), self.batch_size, seed=self.cfg.train.seed)
        keys = stream.keys(0)
        rng = torch.cuda.get_rng_state(self.device), torch.get_rng_state()
        size = self.batch_size
        try:
            while size > 0:
                try:
                    batch = move_batch(
                        self.collate([self.datasets["train"][k] for k in keys[:size]]),
                        self.device,
                        input_dtype(self.model),
                    )
                    torch.cuda.reset_peak_memory_stats(self.device)
                    with self.autocast():
                        out = self.loss(self.model, batch)
                    out.loss_sum.float().backward()
                    return size
                except torch.cuda.OutOfMemoryError:
                    size //= 2
                finally:
                    for p in self.model.parameters():
                        p.grad = None
                    torch.cuda.empty_cache()
            return 0
        finally:
            torch.cuda.set_rng_state(rng[0], self.device)
            torch.set_rng_state(rng[1])

    # ------------------------------------------------------------------ checkpoint/resume

    def _rng_state(self) -> dict:
        state = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": _numpy_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(_tuples(state["python"]))
        _set_numpy_state(state["numpy"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def _gather_rng(self) -> list[dict]:
        mine = self._rng_state()
        if not self.dist.enabled:
            return [mine]
        gathered: list = [None] * self.dist.world_size
        torch_dist.all_gather_object(gathered, mine)
        return gathered

    def _weights(self) -> dict[str, dict[str, torch.Tensor]]:
        weights = {"model": _full_state_dict(self.model, self.cfg.train.fsdp and self.dist.enabled)}
        for name, module in self.extras.items():
            weights[name] = _full_state_dict(module, self.cfg.train.fsdp and self.dist.enabled)
        if self.ema is not None and self.ema.num_updates:
            averaged = self.ema.averaged()
            full = dict(weights["model"])
            full.update({k: v.to(full[k].dtype) for k, v in averaged.items() if k in full})
            weights["model_ema"] = full
        return weights

    def _state(self) -> dict:
        return {
            "format": 1,
            "task": self.task,
            "step": self.step,
            "epoch": self.epoch,
            "micro_step": self.micro_step,
            "world_size": self.dist.world_size,
            "optimizers": {name: self._optimizer_state(name) for name in self.optimizers},
            "scalers": {name: s.state_dict() for name, s in self.scalers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "stability": self.guard.state_dict(),
            "best": self.best,
            "history": self.epoch_history,
            "history_lines": self.tracker.history_lines() if self.tracker else 0,
            "rng": self._gather_rng(),
            "wall_time_s": self._watch.elapsed(),
            "extra": self.extra_state(),
        }

    @property
    def sharded(self) -> bool:
        return bool(self.cfg.train.fsdp and self.dist.enabled)

    def save_checkpoints(self, improved: bool) -> None:
        state = self._state()  # every rank takes part (RNG gather, full state dicts under FSDP)
        weights = self._weights() if self.sharded or self.dist.is_main else {}
        if not self.dist.is_main:
            return
        c = self.cfg.train.checkpoint
        meta = {**self.checkpoint_meta(), "task": self.task, "preset": self.run.preset, "signature": self.run.signature}
        config = {
            "model_type": f"tunesmith-{self.task}",
            "format_version": 1,
            "meta": meta,
            "config": self.resolved.data,
        }
        last = ckpt.save_checkpoint(self.run.checkpoints_dir / "last", weights=weights, state=state, config=config)
        if c.every_epochs and self.epoch % c.every_epochs == 0:
            _link_copy(last, self.run.checkpoints_dir / f"epoch_{self.epoch:04d}")
            ckpt.prune_numbered(self.run.dir, c.keep_last)
        if improved and c.save_best:
            _link_copy(last, self.run.checkpoints_dir / "best")

    def _resume(self) -> None:
        folder = ckpt.latest_good_checkpoint(self.run.dir)
        if folder is None:
            if self.tracker:
                self.tracker.truncate_history(0)
            return
        state = ckpt.load_state(folder, map_location="cpu")
        self._load_module_state(self.model, ckpt.load_weights(folder, "model", ema=False))
        for name, module in self.extras.items():
            self._load_module_state(module, ckpt.load_weights(folder, name, ema=False))
        for name in self.optimizers:
            if name in state["optimizers"]:
                self._load_optimizer_state(name, state["optimizers"][name])
        for name, scaler in self.scalers.items():
            scaler.load_state_dict(state["scalers"].get(name, {}))
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.guard.load_state_dict(state["stability"])
        self.step, self.epoch, self.micro_step = state["step"], state["epoch"], state["micro_step"]
        self.best = state.get("best") or {}
        self.epoch_history = list(state.get("history") or [])
        self._watch = Stopwatch(float(state.get("wall_time_s", 0.0)))
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            self._set_rng_state(rngs[self.dist.rank])
        else:
            log.warning(
                "resuming with %d ranks instead of %d: data order is kept, RNG streams are not",
                self.dist.world_size,
                len(rngs),
            )
        if self.tracker:
            self.tracker.truncate_history(int(state.get("history_lines", 0)))
        self.load_extra_state(state.get("extra") or {})
        log.info("resumed from %s: epoch %d, step %d", folder, self.epoch, self.step)

    # ------------------------------------------------------------------ primitives

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    def _load_module_state(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        if not self.sharded:
            module.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))

    def _optimizer_state(self, name: str) -> dict:
        opt = self.optimizers[name]
        if not self.sharded:
            return opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        module = self.model if name == "model" else self.extras[name]
        return get_optimizer_state_dict(module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _load_optimizer_state(self, name: str, state: dict) -> None:
        opt = self.optimizers[name]
        if not self.sharded:
            opt.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        module = self.model if name == "model" else self.extras[name]
        set_optimizer_state_dict(module, opt, state, options=StateDictOptions(full_state_dict=True))

    def sync_context(self, module: nn.Module, is_last: bool) -> contextlib.AbstractContextManager:
        """Gradient sync (DDP all-reduce, FSDP reduce-scatter) only on the last micro-batch of an update."""
        inner = getattr(module, "_orig_mod", module)
        if hasattr(inner, "set_requires_gradient_sync"):  # FSDP2 (fully_shard)
            inner.set_requires_gradient_sync(is_last)
            return contextlib.nullcontext()
        if is_last or not hasattr(inner, "no_sync"):
            return contextlib.nullcontext()
        return inner.no_sync()

    def global_count(self, n: int | float) -> float:
        return float(all_reduce_sum(torch.tensor([float(n)], dtype=torch.float64, device=self.device)).item())

    def backward(self, loss: torch.Tensor, opt: str = "model") -> None:
        self.scalers[opt].scale(loss).backward()

    def _set_lr(self) -> float:
        o = self.cfg.optim
        lr = lr_at(
            self.step,
            lr=o.lr,
            warmup_steps=o.warmup_steps,
            total_steps=self.total_updates(),
            schedule=o.schedule,
            min_lr=o.min_lr,
        )
        lr *= self.guard.lr_factor
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def step_optimizer(self, opt: str = "model", loss_finite: bool = True) -> StepInfo:
        """Unscale, clip, check, step and zero one optimizer. Records the outcome in the guard."""
        optimizer, scaler = self.optimizers[opt], self.scalers[opt]
        if not scaler.unscale_(optimizer):
            optimizer.zero_grad(set_to_none=True)
            return StepInfo(0.0, True, "no gradients")
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.cfg.optim.max_grad_norm
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf))
        finite = math.isfinite(grad_norm) and loss_finite
        if not finite and not (scaler.enabled and loss_finite):
            optimizer.zero_grad(set_to_none=True)
            if scaler.enabled:
                scaler.scaler.update(scaler.get_scale() * scaler.scaler.get_backoff_factor())
            return StepInfo(grad_norm, True, "non-finite loss or gradient")
        stepped = scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        if not stepped:
            return StepInfo(grad_norm, True, "fp16 overflow")
        return StepInfo(grad_norm, False)

    # kept short for custom train_update implementations
    step_opt = step_optimizer

    # ------------------------------------------------------------------ train

    def train_update(self, micro_batches: list) -> dict[str, float]:
        """One optimizer update over this rank's micro-batches (accumulated)."""
        counts = [self.count_targets(b) for b in micro_batches]
        total = self.global_count(sum(counts))
        scale = self.dist.world_size / max(total, 1.0)  # DDP averages gradients over ranks
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device, dtype=torch.float64))
        plain: dict[str, list[float]] = defaultdict(list)
        for i, batch in enumerate(micro_batches):
            with self.sync_context(self.train_model, i == len(micro_batches) - 1):
                with self.autocast():
                    out = self.loss(self.train_model, batch)
                self.backward(out.loss_sum.float() * scale)
            sums["loss"] += out.loss_sum.detach().double()
            for key, value in out.metrics.items():
                if key.startswith("_"):
                    plain[key[1:]].append(float(value))
                else:
                    sums[key] += torch.as_tensor(value, device=self.device).detach().double()
        keys = sorted(sums)
        reduced = all_reduce_sum(torch.stack([sums[k] for k in keys]))
        metrics = normalise_metrics(dict(zip(keys, reduced.tolist(), strict=True)), total)
        loss_finite = math.isfinite(metrics["loss"])
        info = self.step_optimizer("model", loss_finite=loss_finite)
        self.guard.record(
            nan=info.skipped and info.reason.startswith("non-finite"), inf_grad=info.reason == "fp16 overflow"
        )
        metrics.update({k: sum(v) / len(v) for k, v in plain.items()})
        metrics["grad_norm"] = info.grad_norm
        metrics["targets"] = total
        return metrics

    def _loader(self, keys_sampler, dataset: Dataset) -> DataLoader:
        workers = self.cfg.train.num_workers
        return DataLoader(
            _KeyedDataset(dataset),
            batch_sampler=keys_sampler,
            collate_fn=self.collate,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )

    def _micro_batches(self, n_updates: int) -> Iterator[list]:
        t = self.cfg.train
        stream = TrainStream(
            len(self.datasets["train"]),
            self.batch_size,
            world_size=self.dist.world_size,
            rank=self.dist.rank,
            seed=t.seed,
        )
        start = self.micro_step
        loader = self._loader(
            MicroBatchSampler(stream, start, start + n_updates * t.grad_accum), self.datasets["train"]
        )
        dtype = input_dtype(self.model)
        group = []
        for batch in loader:
            group.append(move_batch(batch, self.device, dtype))
            if len(group) == t.grad_accum:
                yield group
                group = []

    def train_epoch(self) -> dict[str, float]:
        t = self.cfg.train
        n_updates = min(t.updates_per_epoch, self.total_updates() - self.step)
        self.model.train()
        for m in self.extras.values():
            m.train()
        progress = EpochProgress(
            f"train {self.epoch + 1}/{t.epochs}",
            n_updates,
            enabled=progress_enabled(t.log.progress) and self.dist.is_main,
            log_every=t.log.every_steps,
        )
        totals: dict[str, float] = defaultdict(float)
        weights = 0.0
        wait = compute = 0.0
        targets = 0.0
        flops_per_target = self.flops_per_target()
        epoch_start = time.perf_counter()
        tick = time.perf_counter()
        batches = self._micro_batches(n_updates)
        for _ in range(n_updates):
            micro_batches = next(batches)
            got = time.perf_counter()
            wait += got - tick
            lr = self._set_lr()
            metrics = self.train_update(micro_batches)
            self.micro_step += t.grad_accum
            self.step += 1
            if self.ema is not None and self.step % t.ema.every == 0:
                self.ema.update(self.model)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            tick = time.perf_counter()
            compute += tick - got
            n = float(metrics.pop("targets", 0.0))
            targets += n
            for key, value in metrics.items():
                if math.isfinite(value):
                    totals[key] += value * max(n, 1.0)
            weights += max(n, 1.0)
            elapsed = tick - epoch_start
            shown = {**metrics, "lr": lr, "targets_per_s": targets / max(elapsed, 1e-9)}
            if self.tracker and (self.step % t.log.every_steps == 0 or self.step == 1):
                self.tracker.write("train_step", self.step, self.epoch + 1, shown)
            progress.update({k: shown[k] for k in ("loss", "lr", "grad_norm", "targets_per_s") if k in shown})
        progress.close()
        elapsed = time.perf_counter() - epoch_start
        summary = {k: v / max(weights, 1.0) for k, v in totals.items()}
        summary.update(
            targets_per_s=targets / max(elapsed, 1e-9),
            data_wait_share=wait / max(elapsed, 1e-9),
            epoch_seconds=elapsed,
        )
        if flops_per_target:
            achieved = flops_per_target * targets / max(compute, 1e-9)
            summary["gflops_per_s"] = achieved / 1e9 / self.dist.world_size
            if self.device.type == "cuda":
                peak = device_peak_flops(torch.cuda.get_device_name(self.device))
                if peak:
                    summary["mfu"] = achieved / self.dist.world_size / peak
        return summary

    # ------------------------------------------------------------------ valid

    @torch.no_grad()
    def valid_epoch(self) -> dict[str, float]:
        dataset = self.datasets.get("valid")
        if dataset is None or len(dataset) == 0:
            return {}
        t = self.cfg.train
        batches = valid_batches(
            len(dataset),
            self.batch_size,
            world_size=self.dist.world_size,
            rank=self.dist.rank,
            max_batches=t.valid_max_batches,
        )
        model = self.model
        model.eval()
        use_ema = self.ema is not None and t.ema.valid_with_ema
        sums: dict[str, float] = defaultdict(float)
        count = 0.0
        n_batches = 0
        dtype = input_dtype(model)
        with self.ema.swapped_in(model) if use_ema else contextlib.nullcontext():
            loader = self._loader(batches, dataset) if batches else []
            for batch in loader:
                batch = move_batch(batch, self.device, dtype)
                with self.autocast():
                    out = self.valid_step(model, batch)
                count += self.count_targets(batch)
                n_batches += 1
                sums["loss"] += float(out.loss_sum)
                for key, value in out.metrics.items():
                    if key.startswith("_"):  # a per-batch value: averaged over batches
                        sums[key[1:]] += float(value)
                        sums[key[1:] + COUNT_SUFFIX] += 1.0
                    else:
                        sums[key] += float(value)
        _reshard(model)
        keys = sorted(set(sums) | {"loss"})
        # one collective per epoch: ranks with fewer (or no) batches never wait inside the loop
        names = self._all_metric_names(keys)
        vec = torch.tensor([sums.get(k, 0.0) for k in names] + [count], dtype=torch.float64, device=self.device)
        vec = all_reduce_sum(vec)
        total = float(vec[-1])
        if total == 0:
            return {}
        return normalise_metrics(dict(zip(names, vec[:-1].tolist(), strict=True)), total)

    def _all_metric_names(self, keys: list[str]) -> list[str]:
        if not self.dist.enabled:
            return keys
        gathered: list = [None] * self.dist.world_size
        torch_dist.all_gather_object(gathered, keys)
        return sorted({k for ks in gathered for k in ks})

    # ------------------------------------------------------------------ loop

    def is_better(self, value: float) -> bool:
        if "value" not in self.best or not math.isfinite(self.best["value"]):
            return math.isfinite(value)
        return value < self.best["value"] if self.best_mode == "min" else value > self.best["value"]

    def _stage_due(self, every: int, last: bool) -> bool:
        return last or (every > 0 and self.epoch % every == 0)

    def fit(self) -> dict:
        """Run (or resume) training to the end; returns the final status."""
        problems = list(self.preflight())  # the task's data checks, before anything is built or loaded
        if problems:
            raise PreflightError("preflight found problems:\n  - " + "\n  - ".join(problems))
        self.setup()
        self.run_preflight()
        t = self.cfg.train
        if self.dist.is_main:
            self.run.write_status(state="running", epoch=self.epoch, step=self.step)
        try:
            while self.epoch < t.epochs and self.step < self.total_updates():
                train_metrics = self.train_epoch()
                self.epoch += 1
                last = self.epoch >= t.epochs or self.step >= self.total_updates()
                train_metrics.update(self.guard.end_epoch(self.epoch))
                record = {"epoch": self.epoch, "step": self.step, "train": train_metrics}
                improved = False
                if self._stage_due(t.valid_every, last):
                    valid = self.valid_epoch()
                    record["valid"] = valid
                    if self.best_metric in valid and self.is_better(valid[self.best_metric]):
                        improved = True
                        self.best = {"metric": self.best_metric, "value": valid[self.best_metric], "epoch": self.epoch}
                if self._stage_due(t.evaluate_every, last):
                    evaluated = self._on_main_model(self.evaluate)
                    if evaluated:
                        record["evaluate"] = evaluated
                if self._stage_due(t.generate_every, last) and self.dist.is_main:
                    self._on_main_model(self.generate)
                self.epoch_history.append(record)
                if self.tracker and self.dist.is_main:
                    for stage in ("train", "valid", "evaluate"):
                        if record.get(stage):
                            self.tracker.write(stage, self.step, self.epoch, record[stage])
                    self._log_epoch(record)
                self.save_checkpoints(improved)
                if self.dist.is_main:
                    self.run.write_status(
                        state="running",
                        epoch=self.epoch,
                        step=self.step,
                        best=self.best,
                        wall_time_s=round(self._watch.elapsed(), 1),
                    )
                barrier()
            if self.dist.is_main:
                self.run.write_status(
                    state="finished",
                    epoch=self.epoch,
                    step=self.step,
                    best=self.best,
                    wall_time_s=round(self._watch.elapsed(), 1),
                )
        except TrainingAborted as err:
            if self.dist.is_main:
                self.run.write_status(state="aborted", reason=str(err), epoch=self.epoch, step=self.step)
            raise UserError(str(err)) from None
        except BaseException:
            if self.dist.is_main:
                self.run.write_status(state="failed", epoch=self.epoch, step=self.step)
            raise
        finally:
            if self.tracker:
                self.tracker.close()
        return {
            "run_dir": str(self.run.dir),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "history": self.epoch_history,
        }

    def _on_main_model(self, fn):
        model = self.model
        model.eval()
        use_ema = self.ema is not None and self.cfg.train.ema.valid_with_ema
        with torch.no_grad(), self.ema.swapped_in(model) if use_ema else contextlib.nullcontext():
            result = fn(model, self.epoch)
        _reshard(model)
        return result

    def _log_epoch(self, record: dict) -> None:
        train = record["train"]
        line = format_metrics(
            {k: train[k] for k in ("loss", "grad_norm", "targets_per_s", "data_wait_share") if k in train}
        )
        valid = record.get("valid") or {}
        log.info(
            "epoch %d step %d | train %s | valid %s%s",
            record["epoch"],
            record["step"],
            line,
            format_metrics(valid) or "-",
            " (best)" if self.best.get("epoch") == record["epoch"] else "",
        )


# ---------------------------------------------------------------------- helpers


COUNT_SUFFIX = "/count"


def normalise_metrics(sums: dict[str, float], total: float) -> dict[str, float]:
    """Summed metrics → means: ``x`` over ``x/count`` when the task reports one, else over ``total`` targets."""
    out = {}
    for key, value in sums.items():
        if key.endswith(COUNT_SUFFIX):
            continue
        denominator = sums.get(key + COUNT_SUFFIX, total)
        if denominator > 0:
            out[key] = value / denominator
    return out


def _reshard(module: nn.Module) -> None:
    """FSDP keeps the root's parameters gathered after a no-grad forward; shard them again."""
    if hasattr(module, "reshard"):
        module.reshard()


def _full_state_dict(module: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _link_copy(src: Path, dst: Path) -> None:
    """Copy checkpoint folder ``src`` to ``dst`` with hard links (atomically replacing ``dst``)."""
    import os
    import shutil

    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for path in src.iterdir():
        try:
            os.link(path, tmp / path.name)
        except OSError:
            shutil.copy2(path, tmp / path.name)
    ckpt.replace_folder(tmp, dst)


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_state(state: dict) -> None:
    np.random.set_state(
        (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])
    )


def _tuples(obj):
    if isinstance(obj, list):
        return tuple(_tuples(v) for v in obj)
    if isinstance(obj, tuple):
        return tuple(_tuples(v) for v in obj)
    return obj
