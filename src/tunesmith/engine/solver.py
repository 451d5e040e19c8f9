"""The one training engine: the solver base every task (codec, lm, midi, toy) subclasses.

Stages: train (``updates_per_epoch`` optimizer updates), valid (every ``valid_every`` epochs),
evaluate and generate (every N epochs and at the end). One update gathers ``grad_accum``
micro-batches per rank (engine.update); the loss is normalised by the number of targets across all
of them and all ranks, so accumulation and DDP equal one big batch exactly. Everything a resume needs
is registered once in ``self.state`` (engine.state) and saved/restored by one loop. The task's side
of the contract is engine.task.Task.
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
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.artifacts.runs import Run, Stopwatch
from tunesmith.config import Resolved
from tunesmith.engine.data_identity import check_data_identity
from tunesmith.engine.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from tunesmith.engine.ema import EMA
from tunesmith.engine.precision import (
    SafeScaler,
    autocast,
    input_dtype,
    move_batch,
    precision_problems,
    resolve_precision,
)
from tunesmith.engine.preflight import (
    PreflightError,
    checkpoint_bytes,
    count_parameters,
    cuda_memory_problems,
    raise_problems,
    run_folder_problems,
    writable_problems,
    write_failure,
)
from tunesmith.engine.sampler import MicroBatchSampler, TrainStream, valid_batches
from tunesmith.engine.schedule import lr_at
from tunesmith.engine.signals import StopRequest, TrainingStopped, ignore_stop_signals
from tunesmith.engine.stability import StabilityGuard, TrainingAborted
from tunesmith.engine.state import (
    REQUIRED,
    OptimizerState,
    RankRNG,
    StateRegistry,
    load_init_weights,
    load_module_state,
    module_state,
)
from tunesmith.engine.task import Task
from tunesmith.engine.tracking import EpochMeter, Tracker, device_peak_flops, run_log
from tunesmith.engine.update import (
    COUNT_SUFFIX,
    BackwardTarget,
    LossOutput,
    accumulate,
    global_count,
    normalise_metrics,
    sync_context,
)
from tunesmith.errors import UserError
from tunesmith.fileio import remove_stale_temps
from tunesmith.runtime import EpochProgress, format_metrics, pick_device, progress_enabled

log = logging.getLogger("tunesmith.train")

__all__ = ["LossOutput", "PreflightError", "Solver", "StepInfo", "TrainingStopped", "normalise_metrics"]

STATE_FORMAT = 1
EPOCH_PROGRESS = "epoch_progress"  # state.pt key of a mid-epoch checkpoint only: the epoch's running sums


@dataclasses.dataclass
class StepInfo:
    grad_norm: float
    skipped: bool
    reason: str = ""


class _KeyedDataset(Dataset):
    """DataLoader adapter: an item per key, keys supplied by the batch sampler."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getitem__(self, key):
        return self.dataset[key]


class Solver(Task):
    """The engine. Tasks implement engine.task.Task's hooks and never override the methods here."""

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
        self.state = StateRegistry()
        self._watch = Stopwatch()
        self._epoch_meter = EpochMeter()  # the current epoch's running sums (restored by a mid-epoch resume)
        self._stop = StopRequest()

    @property
    def batch_size(self) -> int:
        return int(self.cfg.dataset.batch_size)

    @property
    def sharded(self) -> bool:
        return bool(self.cfg.train.fsdp and self.dist.enabled)

    def total_updates(self) -> int:
        t = self.cfg.train
        total = t.epochs * t.updates_per_epoch
        return min(total, t.max_steps) if t.max_steps else total

    def setup(self) -> None:
        """Seed, run the task's set-up hooks in order, wrap, build optimizers, register state, resume."""
        t = self.cfg.train
        torch.manual_seed(t.seed)  # same initial weights on every rank
        random.seed(t.seed)
        np.random.seed(t.seed % 2**32)
        resolved = self.prepare()
        if resolved is not None:
            self.resolved, self.cfg = resolved, resolved.config
        self._check_data_identity()
        self._choose_best_metric()
        self.model = self.build_model().to(self.device)
        self.extras = {name: m.to(self.device) for name, m in self.extra_modules().items()}
        init_from = self.init_weights_from()
        if init_from:
            load_init_weights(self.model, init_from)
        self.datasets = self.build_datasets()
        if "train" not in self.datasets or len(self.datasets["train"]) == 0:
            raise UserError("the training split is empty: check the dataset (tunesmith check data DIR)")
        if t.fsdp and t.ema.enabled:
            raise UserError("train.ema.enabled=true is not supported with train.fsdp=true; disable one of them")
        # wrap first: FSDP replaces parameters, and optimizers must hold the replaced ones
        self.train_model = self._wrap(self.model, self.fsdp_units(self.model) if self.sharded else [])
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
        self._register_state()
        self.register_extra_state(self.state.group("extra"))
        self._resume()
        self._log_derived()

    def _check_data_identity(self) -> None:
        """The data is the data this run (or its init_from run) trained on; record it (engine.data_identity)."""
        check_data_identity(
            self.run.dir,
            self.data_fingerprint(),
            resuming=bool(ckpt.checkpoint_candidates(self.run.dir)),
            init_from=str(getattr(self.cfg, "init_from", "") or ""),
            force=self.run.force,
            write=self.dist.is_main,
        )

    def _choose_best_metric(self) -> None:
        """``train.best_metric`` (any valid or evaluate metric) over the task's; ``train.best_mode=auto`` takes the
        metric's known direction (tunesmith.eval.suite.metric_direction), the task's for its own metric."""
        from tunesmith.eval.suite import metric_direction

        t = self.cfg.train
        name = getattr(t, "best_metric", "") or self.best_metric
        mode = getattr(t, "best_mode", "auto")
        if mode == "auto":
            mode = self.best_mode if name == self.best_metric else metric_direction(name) or ""
        if mode not in ("min", "max"):
            raise UserError(f"train.best_metric={name}: its direction is not known; set train.best_mode=min or max")
        self.best_metric, self.best_mode = name, mode

    def _register_state(self) -> None:
        """Everything a checkpoint holds, in state.pt's order; weights first (their own files)."""
        s, sharded = self.state, self.sharded
        for name, module in {"model": self.model, **self.extras}.items():
            s.register_weights(
                name,
                lambda m=module: module_state(m, sharded),
                lambda w, m=module: load_module_state(m, w, sharded),
            )
        s.register_weights("model_ema", self._ema_weights)  # written for inference, never read back
        s.register_value("format", lambda: STATE_FORMAT)
        s.register_value("task", lambda: self.task)
        s.register_value("step", lambda: self.step, lambda v: setattr(self, "step", v), missing=REQUIRED)
        s.register_value("epoch", lambda: self.epoch, lambda v: setattr(self, "epoch", v), missing=REQUIRED)
        s.register_value(
            "micro_step", lambda: self.micro_step, lambda v: setattr(self, "micro_step", v), missing=REQUIRED
        )
        s.register_value("world_size", lambda: self.dist.world_size)
        optimizers, scalers = s.group("optimizers"), s.group("scalers")
        for name, opt in self.optimizers.items():
            module = self.model if name == "model" else self.extras[name]
            optimizers.register(name, OptimizerState(module, opt, sharded))
        for name, scaler in self.scalers.items():
            scalers.register(name, scaler, missing={})
        s.register_value(
            "ema",
            lambda: self.ema.state_dict() if self.ema is not None else None,
            lambda v: self.ema.load_state_dict(v) if self.ema is not None and v else None,
        )
        s.register("stability", self.guard, missing=REQUIRED)
        s.register_value("best", lambda: self.best, lambda v: setattr(self, "best", v or {}), missing={})
        s.register_value(
            "history", lambda: self.epoch_history, lambda v: setattr(self, "epoch_history", list(v or [])), missing=[]
        )
        s.register_value(
            "history_lines",
            lambda: self.tracker.history_lines() if self.tracker else 0,
            lambda v: self.tracker.truncate_history(int(v)) if self.tracker else None,
            missing=0,
        )
        s.register("rng", RankRNG(self.dist.rank, self.dist.world_size, self.dist.enabled), missing=REQUIRED)
        s.register_value(
            "wall_time_s", self._watch.elapsed, lambda v: setattr(self, "_watch", Stopwatch(float(v))), missing=0.0
        )

    def _ema_weights(self) -> dict[str, torch.Tensor] | None:
        """The model's weights with the (bias-corrected) averages in place of the trained parameters."""
        if self.ema is None or not self.ema.num_updates:
            return None
        full = module_state(self.model, self.sharded)
        full.update({k: v.to(full[k].dtype) for k, v in self.ema.averaged().items() if k in full})
        return full

    def _wrap(self, module: nn.Module, units: list[nn.Module] | None = None) -> nn.Module:
        """DDP, or FSDP2: each of ``units`` (the task's ``fsdp_units``) sharded on its own, then ``module``."""
        if not any(p.requires_grad for p in module.parameters()):
            return module
        t = self.cfg.train
        if self.dist.enabled:
            if t.fsdp:
                from torch.distributed.fsdp import fully_shard

                for unit in _deepest_first(module, units or []):
                    fully_shard(unit)
                fully_shard(module)
                if units:
                    log.info("FSDP: %d blocks sharded as units of their own, then the model", len(units))
            else:
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.device.index] if self.device.type == "cuda" else None
                module = DistributedDataParallel(
                    module, device_ids=ids, find_unused_parameters=self.ddp_find_unused_parameters
                )
        if t.compile:
            module = torch.compile(module)
        return module

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
        n_params = count_parameters(self.model, *self.extras.values())
        problems = run_folder_problems(self.run.dir, self.dist.rank, n_params)
        if self.device.type == "cuda":
            problems += cuda_memory_problems(
                self.model, self.device, self.batch_size, self.cfg.train.grad_accum, self._probe_batch
            )
        raise_problems(problems)

    def _write_failure(self, err: BaseException) -> UserError | None:
        """A full disk or a read-only/forbidden path met while writing the run (checkpoint, samples, logs):
        one line naming the path, the room a checkpoint needs and what is intact; None for other errors."""
        last = ckpt.checkpoint_candidates(self.run.dir)
        kept = f"the last complete checkpoint ({last[0]}) is intact" if last else "no checkpoint was written yet"
        n_params = count_parameters(self.model, *self.extras.values()) if hasattr(self, "model") else 0
        return write_failure(err, self.run.checkpoints_dir, checkpoint_bytes(n_params), kept)

    def _mark_failed(self, state: str = "failed", **fields: Any) -> None:
        if self.dist.is_main:
            try:
                self.run.write_status(state=state, epoch=self.epoch, step=self.step, **fields)
            except OSError as err:  # e.g. the disk is full: the original error is the one to report
                log.warning("could not record the %s state in %s: %s", state, self.run.status_path, err)

    def _probe_batch(self, size: int) -> None:
        """Forward and backward of one training micro-batch of ``size`` items (no optimizer step)."""
        keys = TrainStream(len(self.datasets["train"]), self.batch_size, seed=self.cfg.train.seed).keys(0)
        batch = self.collate([self.datasets["train"][k] for k in keys[:size]])
        batch = move_batch(batch, self.device, input_dtype(self.model))
        with self.autocast():
            out = self.loss(self.model, batch)
        out.loss_sum.float().backward()

    # ------------------------------------------------------------------ checkpoint / resume

    def save_checkpoints(self, improved: bool) -> None:
        """``last`` every epoch, a numbered copy every ``every_epochs``, ``best`` when improved."""
        last = self._write_last()
        if last is None:
            return
        c = self.cfg.train.checkpoint
        # the first copy of this epoch is independent of `last` (a damaged file never reaches every copy of the
        # newest state); a second one hard-links to that copy
        independent: Path | None = None
        if c.every_epochs and self.epoch % c.every_epochs == 0:
            independent = ckpt.copy_checkpoint(last, self.run.checkpoints_dir / f"epoch_{self.epoch:04d}", link=False)
            ckpt.prune_numbered(self.run.dir, c.keep_last)
        if improved and c.save_best:
            ckpt.copy_checkpoint(independent or last, self.run.checkpoints_dir / "best", link=independent is not None)
        self.after_checkpoint()

    def save_mid_epoch(self) -> Path | None:
        """``last`` only, after an update inside an epoch (a stop request), with the epoch's running sums under
        ``epoch_progress``: the resume continues at the next update (step, micro_step and the RNG streams are
        in the state; the data order is a function of the position) and reports the whole epoch's means."""
        last = self._write_last(**{EPOCH_PROGRESS: self._epoch_meter.state_dict()})
        if last is not None:
            self.after_checkpoint()
        return last

    def _write_last(self, **more_state: Any) -> Path | None:
        """Write ``checkpoints/last`` from the state registry (plus ``more_state``); None on other ranks."""
        # every rank takes part (RNG gather, full state dicts under FSDP, a task's collectives)
        weights, state = self.state.save(weights=self.sharded or self.dist.is_main)
        if not self.dist.is_main:
            return None
        state.update(more_state)
        meta = {**self.checkpoint_meta(), "task": self.task, "preset": self.run.preset, "signature": self.run.signature}
        config = {
            "model_type": f"tunesmith-{self.task}",
            "format_version": 1,
            "meta": meta,
            "config": self.resolved.data,
        }
        return ckpt.save_checkpoint(self.run.checkpoints_dir / "last", weights=weights, state=state, config=config)

    def _resume(self) -> None:
        if self.dist.is_main:  # leftovers of writers killed mid-write (their pid is gone from this host)
            for path in remove_stale_temps(self.run.checkpoints_dir):
                log.info("removed %s, left by a checkpoint write that was killed", path)
            for path in remove_stale_temps(self.run.dir):
                log.info("removed %s, left by a write that was killed (history, status)", path)
        found = ckpt.latest_loadable_state(self.run.dir, map_location="cpu")
        if found is None:
            if self.tracker:
                self.tracker.truncate_history(0)
            return
        folder, state = found
        self.state.load(state, lambda name: ckpt.load_weights(folder, name, ema=False))
        self._epoch_meter = EpochMeter.from_state(state.get(EPOCH_PROGRESS))
        within = f" (update {self.step - self.epoch * self.cfg.train.updates_per_epoch} of epoch {self.epoch + 1})"
        log.info(
            "resumed from %s: epoch %d, step %d%s",
            folder,
            self.epoch,
            self.step,
            within if EPOCH_PROGRESS in state else "",
        )

    # ------------------------------------------------------------------ primitives

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    def sync_context(self, module: nn.Module, is_last: bool) -> contextlib.AbstractContextManager:
        return sync_context(module, is_last)

    def global_count(self, n: int | float) -> float:
        return global_count(n, self.device)

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
        """Unscale, clip, check, step and zero one optimizer."""
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

    # ------------------------------------------------------------------ train

    def _metric_prefix(self, opt: str) -> str:
        return "" if opt == "model" else self.optimizer_metric_prefix.get(opt, f"{opt}_")

    def _backward_targets(self) -> dict[str, BackwardTarget]:
        """The model is synced by DDP/FSDP; an extra module is used unwrapped and reduced by hand."""
        targets = {"model": BackwardTarget(self.scalers["model"])} if "model" in self.scalers else {}
        for name in self.extras:
            if name in self.scalers:
                params = [p for p in self.extras[name].parameters() if p.requires_grad]
                targets[name] = BackwardTarget(self.scalers[name], params, True, f"{self._metric_prefix(name)}loss")
        return targets

    def train_update(self, micro_batches: list) -> dict[str, float]:
        """One update over this rank's micro-batches: accumulate, then step the model's optimizer and
        each extra optimizer that received a loss (in that order). Returns normalised metrics, grad
        norms and ``targets`` (the update's global target count)."""
        result = accumulate(
            micro_batches,
            lambda batch: self.train_loss(self.train_model, batch),
            count_targets=self.count_targets,
            targets=self._backward_targets(),
            sync_module=self.train_model,
            autocast=self.autocast,
            world_size=self.dist.world_size,
            device=self.device,
        )
        metrics = result.metrics
        info = self.step_optimizer("model", loss_finite=math.isfinite(metrics["loss"]))
        self.guard.record(
            nan=info.skipped and info.reason.startswith("non-finite"), inf_grad=info.reason == "fp16 overflow"
        )
        metrics["grad_norm"] = info.grad_norm
        for name in result.optimizers:
            if name != "model":
                prefix = self._metric_prefix(name)
                extra = self.step_optimizer(name, loss_finite=math.isfinite(metrics.get(f"{prefix}loss", 0.0)))
                metrics[f"{prefix}grad_norm"] = extra.grad_norm
        metrics["targets"] = result.total
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
            worker_init_fn=ignore_stop_signals if workers else None,
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
        if self.step != self.epoch * t.updates_per_epoch:  # resumed mid-epoch: this epoch's loader already drew
            with torch.random.fork_rng(devices=[]):  # its base seed from the global RNG before the checkpoint
                batches = iter(loader)
        else:
            batches = iter(loader)
        group = []
        for batch in batches:
            group.append(move_batch(batch, self.device, dtype))
            if len(group) == t.grad_accum:
                yield group
                group = []

    # ------------------------------------------------------------------ epochs

    def train_epoch(self) -> dict[str, float]:
        """The updates left in the current epoch (all of them, unless resumed mid-epoch); returns the epoch's
        train summary. On a stop request it returns after the update in progress: see ``epoch_complete``."""
        t = self.cfg.train
        epoch_end = min((self.epoch + 1) * t.updates_per_epoch, self.total_updates())
        n_updates = max(0, epoch_end - self.step)
        self.model.train()
        for m in self.extras.values():
            m.train()
        meter = self._epoch_meter
        unit = f"{self.target_unit}/s"
        progress = EpochProgress(
            f"train {self.epoch + 1}/{t.epochs}",
            epoch_end - self.epoch * t.updates_per_epoch,
            enabled=progress_enabled(t.log.progress) and self.dist.is_main,
            log_every=t.log.every_steps,
            start=self.step - self.epoch * t.updates_per_epoch,
            after=self.total_updates() - epoch_end,
        )
        flops_per_target = self.flops_per_target()
        epoch_start = time.perf_counter() - meter.seconds
        tick = time.perf_counter()
        batches = self._micro_batches(n_updates)
        for _ in range(n_updates):
            micro_batches = next(batches)
            got = time.perf_counter()
            meter.wait += got - tick
            lr = self._set_lr()
            metrics = self.train_update(micro_batches)
            self.micro_step += t.grad_accum
            self.step += 1
            if self.ema is not None and self.step % t.ema.every == 0:
                self.ema.update(self.model)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            tick = time.perf_counter()
            meter.compute += tick - got
            meter.add(metrics, float(metrics.pop("targets", 0.0)))
            meter.seconds = tick - epoch_start
            shown = {**metrics, "lr": lr, "targets_per_s": meter.targets / max(meter.seconds, 1e-9)}
            if self.tracker and (self.step % t.log.every_steps == 0 or self.step == 1):
                self.tracker.write("train_step", self.step, self.epoch + 1, shown)
            printed = {k: shown[k] for k in ("loss", "lr", "grad_norm") if k in shown}
            progress.update({**printed, unit: round(shown["targets_per_s"])})
            if self.step < epoch_end and self._stop.agreed(self.device, self.dist.enabled):
                break
        progress.close()
        elapsed = time.perf_counter() - epoch_start
        summary = meter.means()
        summary.update(
            targets_per_s=meter.targets / max(elapsed, 1e-9),
            data_wait_share=meter.wait / max(elapsed, 1e-9),
            epoch_seconds=elapsed,
        )
        if flops_per_target:
            achieved = flops_per_target * meter.targets / max(meter.compute, 1e-9)
            summary["gflops_per_s"] = achieved / 1e9 / self.dist.world_size
            if self.device.type == "cuda":
                peak = device_peak_flops(torch.cuda.get_device_name(self.device))
                if peak:
                    summary["mfu"] = achieved / self.dist.world_size / peak
        return self.derived_metrics(summary)

    def epoch_complete(self) -> bool:
        """Whether the current epoch's updates are all done (false after a mid-epoch stop)."""
        t = self.cfg.train
        return self.step >= min((self.epoch + 1) * t.updates_per_epoch, self.total_updates())

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
        return self.derived_metrics(normalise_metrics(dict(zip(names, vec[:-1].tolist(), strict=True)), total))

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
        if self.best.get("metric", self.best_metric) != self.best_metric:  # train.best_metric changed on resume
            return math.isfinite(value)
        return value < self.best["value"] if self.best_mode == "min" else value > self.best["value"]

    def _stage_due(self, every: int, last: bool) -> bool:
        return last or (every > 0 and self.epoch % every == 0)

    def fit(self) -> dict:
        """Run (or resume) training to the end; returns the final status. SIGINT, SIGTERM and SIGUSR1 stop it
        gracefully at an update boundary (engine.signals): checkpoint, status "interrupted", TrainingStopped."""
        with self._stop, run_log(self.run.dir, self.dist.rank):  # train.log / worker_K.log
            return self._fit()

    def _fit(self) -> dict:
        # the precision the device can run, then the task's data checks: before anything is built or loaded
        raise_problems([*precision_problems(self.precision, self.device), *self.preflight()])
        raise_problems(writable_problems(self.run.dir, self.dist.rank))  # a resume writes too (TensorBoard...)
        self.setup()
        self.run_preflight()
        t = self.cfg.train
        if self.dist.is_main:
            self.run.write_status(state="running", epoch=self.epoch, step=self.step)
        try:
            if t.epochs == 0:  # evaluate-only: the valid and evaluate stages on the starting weights
                self._evaluate_start()
            while self.epoch < t.epochs and self.step < self.total_updates():
                if self._stop.agreed(self.device, self.dist.enabled):  # during set-up, valid or a checkpoint
                    self._stop_run(write=False)
                train_metrics = self.train_epoch()
                if not self.epoch_complete():
                    self._stop_run(write=True)
                self._epoch_meter = EpochMeter()
                self.epoch += 1
                last = self.epoch >= t.epochs or self.step >= self.total_updates()
                train_metrics.update(self.guard.end_epoch(self.epoch))
                record = {"epoch": self.epoch, "step": self.step, "train": train_metrics}
                if self._stage_due(t.valid_every, last):
                    record["valid"] = self.valid_epoch()
                if self._stage_due(t.evaluate_every, last):
                    evaluated = self._on_main_model(self.evaluate)
                    if evaluated:
                        record["evaluate"] = evaluated
                scores = {**record.get("evaluate", {}), **record.get("valid", {})}  # best: any valid/evaluate metric
                improved = self.best_metric in scores and self.is_better(scores[self.best_metric])
                if improved:
                    self.best = {"metric": self.best_metric, "value": scores[self.best_metric], "epoch": self.epoch}
                if self._stage_due(t.generate_every, last) and self.dist.is_main:
                    self._generate_stage()
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
        except TrainingStopped:
            raise
        except TrainingAborted as err:
            if self.dist.is_main:
                self.run.write_status(state="aborted", reason=str(err), epoch=self.epoch, step=self.step)
            raise UserError(str(err)) from None
        except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint now, the last one still resumes
            self._mark_failed("interrupted", reason="stopped at once by a second Ctrl-C")
            raise
        except Exception as err:
            self._mark_failed()
            failure = self._write_failure(err)
            if failure is None:
                raise
            raise failure from None
        except BaseException:
            self._mark_failed()
            raise
        finally:
            if self.tracker:
                try:
                    self.tracker.close()
                except OSError as err:  # a full disk while flushing logs: the checkpoints are what matters
                    log.warning("closing the run's logs failed: %s", err)
        return {
            "run_dir": str(self.run.dir),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "history": self.epoch_history,
        }

    def _stop_run(self, *, write: bool) -> None:
        """After a stop request: ``last`` at this update (``write``), status "interrupted", TrainingStopped."""
        log.warning("stopped by %s after update %d%s", self._stop.signal_name or "a signal", self.step,
                    ": writing the checkpoint" if write else "")  # fmt: skip
        folder = self.save_mid_epoch() if write else None
        if folder is None and self.dist.is_main:
            candidates = ckpt.checkpoint_candidates(self.run.dir)
            folder = candidates[0] if candidates else None
        name = self._stop.signal_name or "a signal"
        if self.dist.is_main:
            self.run.write_status(
                state="interrupted",
                reason=f"stopped by {name}",
                epoch=self.epoch,
                step=self.step,
                best=self.best,
                wall_time_s=round(self._watch.elapsed(), 1),
            )
        barrier()
        raise TrainingStopped(name, self.step, str(folder) if folder else None)

    def _evaluate_start(self) -> None:
        """``train.epochs=0``: valid and evaluate on the weights as built (init_from), logged at epoch 0."""
        record: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "train": {}, "valid": self.valid_epoch()}
        evaluated = self._on_main_model(self.evaluate)
        if evaluated:
            record["evaluate"] = evaluated
        if self.tracker and self.dist.is_main:
            for stage in ("valid", "evaluate"):
                if record.get(stage):
                    self.tracker.write(stage, self.step, self.epoch, record[stage])
            self._log_epoch(record)

    def _generate_stage(self) -> None:
        """The generate stage (main rank only). Skipped on an FSDP-sharded model: its forward would wait for
        all-gathers the other ranks never join (logged once per process)."""
        if self.sharded:
            if not getattr(self, "_generate_skip_logged", False):
                log.info("generate stage skipped: train.fsdp=true shards the model over the ranks")
                self._generate_skip_logged = True
            return
        self._on_main_model(self.generate)

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
        shown = {k: train[k] for k in ("loss", "grad_norm") if k in train}
        if "targets_per_s" in train:
            shown[f"{self.target_unit}/s"] = round(train["targets_per_s"])
        if "data_wait_share" in train:
            shown["data_wait_share"] = train["data_wait_share"]
        if "epoch_seconds" in train:
            shown["epoch_s"] = round(train["epoch_seconds"], 1)
        line = format_metrics(shown)
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


def _deepest_first(root: nn.Module, units: list[nn.Module]) -> list[nn.Module]:
    """``units`` ordered for ``fully_shard`` (a unit inside another one first); each must be a submodule of
    ``root`` other than ``root`` itself, listed once (a task's ``fsdp_units`` that breaks this is a bug)."""
    depth = {id(m): name.count(".") + 1 for name, m in root.named_modules() if name}
    seen: set[int] = set()
    for unit in units:
        if id(unit) not in depth:
            raise ValueError(f"fsdp_units: {type(unit).__name__} is not a submodule of {type(root).__name__}")
        if id(unit) in seen:
            raise ValueError(f"fsdp_units: {type(unit).__name__} is listed twice")
        seen.add(id(unit))
    return sorted(units, key=lambda m: -depth[id(m)])  # stable: same depth keeps the task's order


def _reshard(module: nn.Module) -> None:
    """FSDP keeps the root's parameters gathered after a no-grad forward (units of their own reshard after
    their forward, but a stage may have stopped inside one); shard every unit again (local, no collective)."""
    from torch.distributed.fsdp import FSDPModule

    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
