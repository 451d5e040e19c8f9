"""The task contract: what a task (codec, lm, midi, toy) tells the engine, and nothing more.

A task subclasses :class:`tunesmith.engine.solver.Solver` and implements the hooks below; it never
overrides the engine's own methods (set-up, update, epochs, checkpoints, resume). The engine calls
the set-up hooks once, in this order, after seeding::

    prepare()                      → optional new Resolved config (e.g. an imported model's shape)
    data_fingerprint()             → what identifies the data (checked against the run's data.json)
    build_model()                  → the model (init_weights_from() is then loaded into it)
    extra_modules()                → other trained modules, each with its own optimizer
    build_datasets()               → {"train": ..., "valid": ...}
    register_extra_state(extra)    → the task's own state for exact resume

then, per update, ``train_loss`` on every micro-batch (``loss`` by default), and per epoch
``valid_step``, ``evaluate`` and ``generate``. The remaining hooks are named extension points with
do-nothing defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn
from torch.utils.data import Dataset, default_collate

if TYPE_CHECKING:
    from tunesmith.config import Resolved
    from tunesmith.engine.state import StateRegistry
    from tunesmith.engine.update import LossOutput


class Task:
    task: ClassVar[str] = "base"  # runs/<task>/<signature>/, configs/<task>/*.yaml
    config_class: ClassVar[type | None] = None  # dataclass: train: TrainConfig, optim: OptimConfig,
    # dataset: <has batch_size: int>, plus the task's own sections
    best_metric: ClassVar[str] = "loss"  # a valid metric: the "best" checkpoint
    best_mode: ClassVar[str] = "min"
    target_unit: ClassVar[str] = "targets"  # what count_targets counts, in printed rates ("tokens" → tokens/s)
    ddp_find_unused_parameters: ClassVar[bool] = False
    optimizer_metric_prefix: ClassVar[dict[str, str]] = {}  # extra optimizer → prefix of its logged
    # loss and grad norm (default "<name>_"): the codec logs its discriminator's as d_loss, d_grad_norm

    # ------------------------------------------------------------------ set-up (required: model, datasets, loss)

    def prepare(self) -> Resolved | None:
        """Called once before build_model/build_datasets: open what both need (a codec, a token cache).
        Return a new resolved config when a source fixes part of it (checkpoints then record it)."""
        return None

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def extra_modules(self) -> dict[str, nn.Module]:
        """Other trained modules, e.g. ``{"discriminator": d}``: each gets its own optimizer and scaler,
        is checkpointed as ``<name>.safetensors`` and is handed to ``train_loss`` unwrapped (its gradients
        are summed over ranks by the engine)."""
        return {}

    def build_datasets(self) -> dict[str, Dataset]:
        """``"train"`` (required) and optional ``"valid"``, indexed by ``(index, seed)`` sample keys."""
        raise NotImplementedError

    def collate(self, items: list) -> Any:
        return default_collate(items)

    def count_targets(self, batch: Any) -> int:
        """How many targets ``loss`` sums over (default: the batch size)."""
        first = (
            batch[0]
            if isinstance(batch, (list, tuple))
            else next(iter(batch.values()))
            if isinstance(batch, dict)
            else batch
        )
        return int(first.shape[0])

    def loss(self, model: nn.Module, batch: Any) -> LossOutput:
        """``LossOutput(loss_sum, metrics)``: summed over the batch's targets (see engine.update)."""
        raise NotImplementedError

    def register_extra_state(self, extra: StateRegistry) -> None:
        """Register the task's state for exact resume (``extra.register(name, obj)`` or
        ``extra.register_value(name, get, set)``), saved as ``state.pt["extra"][name]``. Saving runs on
        every rank, so a getter may use collectives."""
        return None

    # ------------------------------------------------------------------ extension points

    def train_loss(self, model: nn.Module, batch: Any) -> LossOutput:
        """One training micro-batch (default: ``loss``). Override when training back-propagates more than
        the reported loss: ``LossOutput.per_optimizer`` maps optimizer names ("model", extra modules) to
        the loss each one steps on, all summed over targets. Runs under autocast."""
        return self.loss(model, batch)

    def valid_step(self, model: nn.Module, batch: Any) -> LossOutput:
        return self.loss(model, batch)

    def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics computed from an epoch's means (train summary and valid results), e.g. perplexity."""
        return metrics

    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        return {}

    def generate(self, model: nn.Module, epoch: int) -> None:
        return None

    def preflight(self) -> list[str]:
        """Problems with the data and settings, found before anything is built (empty: fine)."""
        return []

    def data_fingerprint(self) -> dict | None:
        """A small plain dict identifying the data this run trains on (called after ``prepare``), e.g.
        ``tunesmith.data.prepare.fingerprint.audio_fingerprint(DIR)``. The engine records it in the run
        folder and refuses to resume (or start ``init_from`` a run) on changed data unless --force.
        None: nothing to check (synthetic data derived from the config)."""
        return None

    def flops_per_target(self) -> float | None:
        """For GFLOP/s and MFU in the train summary."""
        return None

    def init_weights_from(self) -> str:
        """Weights the engine loads into the built model (non-strict) before training: by default
        ``init_from``; "" when build_model already started from them (LoRA, an imported model)."""
        return str(getattr(self.cfg, "init_from", "") or "")

    def checkpoint_meta(self) -> dict:
        """Plain data stored in every checkpoint's config.json ``meta`` and carried into exported model
        dirs (e.g. a tokenizer description), so a model decodes on its own without the training state."""
        return {}

    def after_checkpoint(self) -> None:
        """Called on the main rank after each checkpoint is written (e.g. a LoRA adapter folder)."""
        return None

    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        """Under ``train.fsdp=true``: the blocks of the built ``model`` (submodules, e.g. its transformer layers)
        that become FSDP units of their own. The engine shards each (torch's ``fully_shard``, deepest first),
        then the model itself, so a forward or backward gathers one block's parameters at a time instead of
        the whole model's. Default ``[]``: the whole model is one unit (every forward gathers all of it)."""
        return []

    cfg: Any  # set by the engine
