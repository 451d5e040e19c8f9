"""The one loader of an LM from a run folder, checkpoint folder or exported model dir.

:func:`read_lm_checkpoint` gives the checkpoint folder, its run config and meta, the resolved
:class:`LMConfig` and plain weights (LoRA adapters merged); :func:`build_from` builds the model from
them; :func:`load_lm` does both. Inference, export and ``init_from`` all load LMs through here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.errors import UserError
from tunesmith.models.lm.model import LMConfig, LMModel, build_lm


@dataclasses.dataclass
class LMCheckpoint:
    """An LM checkpoint read back: ``weights`` are plain (name → tensor), ``config`` the resolved LMConfig."""

    folder: Path
    run_config: dict
    meta: dict
    config: LMConfig
    weights: dict[str, Tensor]


def lm_config_of(run_cfg: dict, where: Path) -> LMConfig:
    """The ``model`` section of a run config (over LMConfig's defaults) → LMConfig; UserError naming the file."""
    from tunesmith.config import ConfigError, from_dict, merge_into, to_dict

    try:
        return from_dict(LMConfig, merge_into(to_dict(LMConfig()), run_cfg.get("model") or {}, LMConfig))
    except (ConfigError, ValueError) as err:
        raise UserError(f"{where}/config.json: bad LM model section: {err}") from err


def _with_local_t5(cfg: LMConfig, folder: Path) -> LMConfig:
    """A moved model dir keeps its T5 inside (``t5/``): point the conditioner there when the recorded path is gone."""
    cond = cfg.conditioner
    if cond.text != "t5" or Path(cond.t5_path).expanduser().is_dir():
        return cfg
    for candidate in (folder / cond.t5_path, folder / "t5") if cond.t5_path else (folder / "t5",):
        if candidate.is_dir():
            return dataclasses.replace(cfg, conditioner=dataclasses.replace(cond, t5_path=str(candidate)))
    return cfg


def read_lm_checkpoint(source: str | Path, which: str = "best", *, merge_lora: bool = True) -> LMCheckpoint:
    """Read an LM run/checkpoint/model dir (checksums verified); LoRA adapters merged unless ``merge_lora=False``."""
    from tunesmith.models.lm.lora import has_lora, merge_lora_state

    folder = ckpt.find_checkpoint(source, which=which)
    raw = ckpt.read_config(folder)
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    if meta.get("task") not in (None, "lm"):
        raise UserError(f"{source}: this is a {meta.get('task')!r} model, not an LM")
    run_cfg = raw.get("config", raw)
    if not isinstance(run_cfg, dict) or not isinstance(run_cfg.get("model"), dict):
        raise UserError(f"{folder}/config.json: no LM 'model' section; is it a tunesmith LM?")
    config = _with_local_t5(lm_config_of(run_cfg, folder), folder)
    weights = ckpt.load_weights(folder, "model")
    if merge_lora and has_lora(weights):
        weights = merge_lora_state(weights)
    return LMCheckpoint(folder, run_cfg, meta, config, weights)


def build_from(checkpoint: LMCheckpoint, device: str = "cpu", dtype: torch.dtype | None = None) -> LMModel:
    """The LMModel of a checkpoint, on ``device`` (weights cast to ``dtype`` when given); UserError when the
    weights do not fit the config."""
    try:
        model = build_lm(checkpoint.config, checkpoint.weights)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"{checkpoint.folder}: the weights do not fit the LM config: {err}") from err
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def load_lm(source: str | Path, which: str = "best", device: str = "cpu") -> tuple[LMModel, LMCheckpoint]:
    """(model on ``device``, its checkpoint) of an LM run, checkpoint folder or model dir."""
    checkpoint = read_lm_checkpoint(source, which)
    return build_from(checkpoint, device), checkpoint
