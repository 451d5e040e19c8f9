"""LoRA on the tunesmith LM through peft: settings, injection, adapter files, merging.

peft wraps the targeted linears (and optionally the codebook embeddings) in place; the model keeps
its class and its forward, so the engine trains it like any other (only the adapters require grad).
Adapters are created in float32 before the frozen base is cast (``base_dtype``), so a bf16 base
trains fp32 adapters. The LoRA scale (``alpha / r``) is kept in the model as the buffer
``lora_scaling``, so every state dict of a LoRA model says how to merge itself
(:func:`merge_lora_state`) without its config.

An adapter folder (``write_adapter``) holds::

    adapter_model.safetensors   the trained tensors only (peft names: base_model.model.<module>.lora_A.weight …)
    adapter_config.json         peft's LoraConfig fields + "tunesmith": {base, lm config, scale, extra tensors}
    manifest.json               sha256 and size of both
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tunesmith.config import ConfigError
from tunesmith.errors import UserError

log = logging.getLogger(__name__)

SCALING = "lora_scaling"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."

# short target name → module-name pattern in the LM (None: trained fully, not through LoRA)
TARGETS: dict[str, str | None] = {
    "qkv": r"transformer\.layers\.\d+\.self_attn\.qkv",
    "out": r"transformer\.layers\.\d+\.(self_attn|cross_attn)\.out",
    "q": r"transformer\.layers\.\d+\.cross_attn\.q",
    "kv": r"transformer\.layers\.\d+\.cross_attn\.kv",
    "fc1": r"transformer\.layers\.\d+\.ffn\.fc1",
    "fc2": r"transformer\.layers\.\d+\.ffn\.fc2",
    "embed": r"embed",  # codebook embeddings (peft's LoRA embedding)
    "proj": r"conditioner\.text\.proj",  # the text encoder's projection to the LM width
    "heads": None,  # output heads: one [K, card, D] parameter, trained fully and saved with the adapter
}
DEFAULT_TARGETS = ["qkv", "out", "q", "kv", "fc1", "fc2"]  # attention and feed-forward projections


@dataclasses.dataclass
class LoraSettings:
    """``finetune.lora.*``: rank, scale (``alpha / r``), dropout on the adapter input, what to adapt."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_TARGETS))
    base_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"  # frozen base weights; adapters stay fp32

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"finetune.lora.r={self.r}: must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"finetune.lora.dropout={self.dropout}: must be in [0, 1)")
        unknown = [t for t in self.target_modules if t not in TARGETS]
        if unknown or not self.target_modules:
            raise ConfigError(
                f"finetune.lora.target_modules={self.target_modules}: choose from {sorted(TARGETS)} "
                f"(default {DEFAULT_TARGETS})"
            )

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def target_regex(targets: list[str]) -> str:
    """One full-match regex over module names for the LoRA-adapted targets (``heads`` excluded)."""
    patterns = [TARGETS[t] for t in targets if TARGETS[t] is not None]
    return "^(" + "|".join(patterns) + ")$"


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Inject LoRA adapters into ``model`` in place and freeze everything else; returns ``model``.

    ``heads`` in ``target_modules`` trains the output heads fully. The frozen base is then cast to
    ``settings.base_dtype`` while adapters (and trained heads) stay float32.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # pragma: no cover - depends on the install
        raise UserError("finetune.mode=lora needs peft: pip install 'tunesmith[hf]'") from err
    if hasattr(model, SCALING):
        raise UserError("this model already has LoRA adapters; merge them first (tunesmith merge)")
    model.requires_grad_(False)
    if any(TARGETS[t] is not None for t in settings.target_modules):
        config = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=target_regex(settings.target_modules),
            bias="none",
        )
        try:
            inject_adapter_in_model(config, model)
        except ValueError as err:
            raise UserError(f"finetune.lora.target_modules={settings.target_modules}: {err}") from err
    if "heads" in settings.target_modules:
        model.heads.requires_grad_(True)
    model.register_buffer(SCALING, torch.tensor(settings.scaling, dtype=torch.float32))
    base = DTYPES[settings.base_dtype]
    if base != torch.float32:
        for param in model.parameters():
            if not param.requires_grad and param.is_floating_point():
                param.data = param.data.to(base)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d alpha=%g on %s: %s of %s parameters train", settings.r, settings.alpha,
             settings.target_modules, f"{trainable:,}", f"{total:,}")  # fmt: skip
    return model


def has_lora(state: dict[str, Tensor]) -> bool:
    return SCALING in state or any(".lora_A." in k or ".lora_embedding_A." in k for k in state)


def merge_lora_state(state: dict[str, Tensor], dtype: torch.dtype | None = torch.float32) -> dict[str, Tensor]:
    """A LoRA model's state dict → the plain model's, adapters merged: ``W + scale · B A``.

    Linear: ``lora_A`` [r, in], ``lora_B`` [out, r]; embedding: ``lora_embedding_A`` [r, num],
    ``lora_embedding_B`` [dim, r] (``W += scale · (B A)ᵀ``). Merged weights are computed in float32 and
    stored as ``dtype`` (None: the base weight's dtype). Other tensors pass through unchanged.
    """
    if SCALING not in state:
        raise UserError(f"these LoRA weights carry no {SCALING!r}; they were not saved by tunesmith")
    scale = float(state[SCALING])
    out: dict[str, Tensor] = {}
    pattern = re.compile(r"^(.*)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.[^.]+)?(\.weight)?$")
    adapters: dict[str, dict[str, Tensor]] = {}
    for name, tensor in state.items():
        match = pattern.match(name)
        if match:
            adapters.setdefault(match.group(1), {})[match.group(2)] = tensor
        elif name != SCALING and ".lora_dropout." not in name:
            out[name.replace(".base_layer.", ".")] = tensor
    for module, parts in adapters.items():
        key = f"{module}.weight"
        if key not in out:
            raise UserError(f"LoRA adapter for {module!r} has no base weight ({module}.base_layer.weight)")
        base = out[key]
        if "lora_A" in parts:
            delta = parts["lora_B"].float() @ parts["lora_A"].float()
        else:
            delta = (parts["lora_embedding_B"].float() @ parts["lora_embedding_A"].float()).t()
        if delta.shape != base.shape:
            raise UserError(f"LoRA adapter for {module!r} has shape {list(delta.shape)}, its base {list(base.shape)}")
        out[key] = (base.float() + scale * delta).to(dtype or base.dtype)
    return out


# --------------------------------------------------------------------------- adapter files


def _to_peft_name(name: str) -> str:
    return PEFT_PREFIX + re.sub(r"\.(lora_A|lora_B)\.default\.", r".\1.", name).replace(
        ".lora_embedding_A.default", ".lora_embedding_A"
    ).replace(".lora_embedding_B.default", ".lora_embedding_B")


def _from_peft_name(name: str) -> str:
    name = name.removeprefix(PEFT_PREFIX)
    name = re.sub(r"\.(lora_A|lora_B)\.weight$", r".\1.default.weight", name)
    return re.sub(r"\.(lora_embedding_A|lora_embedding_B)$", r".\1.default", name)


def _is_adapter_key(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name


def adapter_tensors(state: dict[str, Tensor], extra: list[str]) -> dict[str, Tensor]:
    """The adapter part of a LoRA model's state dict, in peft's names (+ fully trained ``extra`` tensors)."""
    out = {_to_peft_name(k): v for k, v in state.items() if _is_adapter_key(k)}
    for name in extra:
        out[name] = state[name]
    return out


def write_adapter(
    out: str | Path, state: dict[str, Tensor], settings: LoraSettings, info: dict[str, Any], *, force: bool = False
) -> Path:
    """Write an adapter folder from a LoRA model's state dict; an existing ``out`` is replaced (atomically)
    only when it is an adapter tunesmith wrote and ``force`` is given (``guard_output``)."""
    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.artifacts.modeldir import guard_output
    from tunesmith.fileio import swap_folder
    from tunesmith.models.hf.hfdir import save_safetensors

    out = Path(out)
    guard_output(out, force=force)
    extra = ["heads"] if "heads" in settings.target_modules else []
    config = {
        "peft_type": "LORA",
        "r": settings.r,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": target_regex(settings.target_modules),
        "bias": "none",
        "inference_mode": True,
        "tunesmith": {**info, "lora": dataclasses.asdict(settings), "scaling": settings.scaling, "extra": extra},
    }
    with swap_folder(out) as tmp:
        save_safetensors(tmp / ADAPTER_WEIGHTS, adapter_tensors(state, extra))
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        ckpt.write_manifest(tmp)
    return out


def read_adapter(folder: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """An adapter folder → (its adapter_config.json, its tensors in the LM's own names), checksums verified."""
    from tunesmith.artifacts.checkpoint import load_tensors, verify_folder

    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise UserError(f"{folder}: not an adapter folder ({ADAPTER_CONFIG} is missing)")
    problems = verify_folder(folder)
    if problems:
        raise UserError("; ".join(problems))
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if "tunesmith" not in config:
        raise UserError(f"{folder / ADAPTER_CONFIG}: no 'tunesmith' section; not an adapter tunesmith wrote")
    tensors = {_from_peft_name(k): v for k, v in load_tensors(folder / ADAPTER_WEIGHTS).items()}
    tensors[SCALING] = torch.tensor(float(config["tunesmith"]["scaling"]))
    return config, tensors


def apply_adapter_to_base(base: dict[str, Tensor], adapter: dict[str, Tensor]) -> dict[str, Tensor]:
    """A plain base state dict + adapter tensors (LM names) → a LoRA state dict ready for merging.

    Fully trained extra tensors in the adapter (e.g. ``heads``) replace the base's.
    """
    lora = re.compile(r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\..*)?$")
    adapted = {lora.sub("", k) for k in adapter if lora.search(k)}
    modules = {name.rsplit(".", 1)[0] for name in base if name.endswith(".weight")}
    missing = sorted(adapted - modules)
    if missing:
        raise UserError(f"the adapter adapts modules the base model lacks: {missing[:4]}")
    unknown = sorted(k for k in adapter if not lora.search(k) and k != SCALING and k not in base)
    if unknown:
        raise UserError(f"the adapter holds tensors the base model lacks: {unknown[:4]}")
    state: dict[str, Tensor] = {}
    for name, tensor in base.items():
        module = name.rsplit(".", 1)[0]
        state[f"{module}.base_layer.weight" if name.endswith(".weight") and module in adapted else name] = tensor
    state.update(adapter)
    return state
