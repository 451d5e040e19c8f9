"""The repeated blocks of a transformers model (its decoder layers), e.g. for per-block FSDP units.

transformers names the classes that must never be split across devices in ``_no_split_modules`` (for
HiggsAudio v2: ``["HiggsAudioV2DecoderLayer"]``): exactly the blocks to shard one by one. A peft wrapper
(``PeftModel``, ``get_base_model()``) and DDP/FSDP-style ``.module`` wrappers are looked through; LoRA
injects its adapters inside the blocks, so they keep their class.
"""

from __future__ import annotations

from torch import nn


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside ``.module`` wrappers and a peft ``PeftModel``."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def no_split_blocks(model: nn.Module) -> list[nn.Module]:
    """Every submodule of ``model`` whose class is in the transformers model's ``_no_split_modules``, in
    module order (outermost only: a listed block inside another listed block is left to its parent).

    Raises ValueError when the model declares none, or none is found: the caller would otherwise silently
    get one FSDP unit for the whole model."""
    inner = base_model(model)
    names = set(getattr(inner, "_no_split_modules", None) or [])
    if not names:
        raise ValueError(f"{type(inner).__name__} declares no _no_split_modules: its blocks are unknown")
    blocks: list[nn.Module] = []
    inside: set[int] = set()
    for module in inner.modules():
        if id(module) in inside or type(module).__name__ not in names:
            continue
        blocks.append(module)
        inside.update(id(m) for m in module.modules())
    if not blocks:
        raise ValueError(f"{type(inner).__name__}: no module of the classes {sorted(names)} was found")
    return blocks
