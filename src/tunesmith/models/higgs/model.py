"""HiggsAudio v2 models for training and inference: load the transformers model, prepare it for fine-tuning
(frozen text head, peft LoRA, gradient checkpointing), merge LoRA, and load any HiggsAudio source.

Sources :func:`load_higgs` accepts:

- a transformers ``HiggsAudioV2ForConditionalGeneration`` folder (``config.json`` with
  ``model_type: "higgs_audio_v2"``), also one written by ``tunesmith import hf`` (the same layout, the
  audio tokenizer inside as ``audio_tokenizer/``);
- a ``tunesmith train tts`` run folder or one of its checkpoint folders: the checkpoint's ``config.json``
  holds the run config (``finetune``, ``text_loss``) and ``meta.source`` = the transformers folder the base
  weights came from (``RUN/hf_init``); the model is rebuilt like training built it (base + LoRA with the
  recorded settings), the state dict loaded strictly, and LoRA merged.

LoRA: peft's ``get_peft_model`` on the whole transformers model with ``target_modules`` as module-name
suffixes (peft matches ``name == t or name.endswith("." + t)``); the state dict of the returned
``PeftModel`` names adapters ``base_model.model.<module>.lora_A.default.weight``. Adapters are float32,
the frozen base is cast to ``base_dtype`` first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tunesmith.config import ConfigError
from tunesmith.errors import UserError
from tunesmith.models.higgs.checkpoint import (
    MODEL_TYPE,
    HiggsCheckpoint,
    load_text_tokenizer,
    prompt_builder,
    read_higgs_checkpoint,
)
from tunesmith.models.higgs.prompt import HiggsPromptBuilder
from tunesmith.models.higgs.tokenizer import HiggsAudioTokenizer, load_higgs_tokenizer

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FAMILY = "higgs_audio_v2"
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclasses.dataclass
class HiggsLoraSettings:
    """``finetune.lora.*`` of the tts task: rank, ``alpha`` (scale = alpha / r), dropout on the adapter input,
    the adapted modules (name suffixes in the transformers model) and the frozen base's dtype."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_TARGETS))
    base_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"finetune.lora.r={self.r}: must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"finetune.lora.dropout={self.dropout}: must be in [0, 1)")
        if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
            raise ConfigError(
                f"finetune.lora.target_modules={self.target_modules}: give module-name suffixes, e.g. {DEFAULT_TARGETS}"
            )
        if self.base_dtype not in DTYPES:
            raise ConfigError(f"finetune.lora.base_dtype={self.base_dtype!r}: choose from {sorted(DTYPES)}")


@dataclasses.dataclass
class HiggsFinetuneConfig:
    """``finetune.*`` of the tts task: LoRA (adapters only) or full fine-tuning; activation checkpointing."""

    mode: Literal["full", "lora"] = "lora"
    lora: HiggsLoraSettings = dataclasses.field(default_factory=HiggsLoraSettings)
    gradient_checkpointing: bool = False  # recompute each decoder layer in backward (non-reentrant)

    def __post_init__(self) -> None:
        if self.mode not in ("full", "lora"):
            raise ConfigError(f"finetune.mode={self.mode!r}: choose full or lora")


def load_base_model(
    checkpoint: HiggsCheckpoint, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> nn.Module:
    """transformers' ``HiggsAudioV2ForConditionalGeneration`` from ``checkpoint.directory`` (local files only),
    with its text head when the weights have one (transformers would silently drop it otherwise)."""
    from transformers import HiggsAudioV2ForConditionalGeneration

    try:
        model = HiggsAudioV2ForConditionalGeneration.from_pretrained(
            str(checkpoint.directory),
            local_files_only=True,
            dtype=dtype,
            use_text_head=checkpoint.has_text_head,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{checkpoint.directory}: cannot load the HiggsAudio v2 model ({err})") from err
    return model.to(device)


def _inner(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def prepare_for_training(model: nn.Module, finetune: HiggsFinetuneConfig, text_loss: bool) -> nn.Module:
    """Make a freshly loaded transformers model ready for the engine; returns the model to train.

    - the text head is frozen unless ``text_loss`` (so DDP never sees a trainable parameter without a
      gradient); ``text_loss`` without a text head is a UserError;
    - ``mode=lora``: the base is frozen and cast to ``lora.base_dtype``, peft LoRA adapters (float32) on the
      modules whose names end with ``lora.target_modules``; returns the ``PeftModel``;
    - ``gradient_checkpointing``: transformers' non-reentrant activation checkpointing of every decoder
      layer (works with a frozen embedding, LoRA and DDP; skipped automatically in eval and with a cache).
    """
    head = getattr(model, "text_lm_head", None)
    if text_loss and head is None:
        raise UserError(
            "text_loss=true but the model has no text head (text_lm_head.weight is not in its weights); "
            "train with text_loss=false, or start from a checkpoint saved with use_text_head=True"
        )
    if head is not None and not text_loss:
        head.requires_grad_(False)
    if finetune.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # training never uses the cache; generation passes use_cache=True itself
    if finetune.mode != "lora":
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover - depends on the install
        raise UserError("finetune.mode=lora needs peft: pip install 'tunesmith[hf]'") from err
    lora = finetune.lora
    model.requires_grad_(False)
    base = DTYPES[lora.base_dtype]
    if base != torch.float32:
        model.to(base)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"finetune.lora.target_modules={lora.target_modules}: {err}") from err
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()
            param.requires_grad_(True)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA r=%d on %s: %d of %d parameters train", lora.r, lora.target_modules, trainable, total)
    return peft_model


def merge_lora(model: nn.Module) -> nn.Module:
    """A plain transformers model: peft's ``merge_and_unload`` for a ``PeftModel``, the model itself otherwise."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_adapter(
    model: nn.Module, state: dict[str, torch.Tensor], out: Path, *, base: Path, checkpoint: Path | None = None
) -> Path:
    """Write peft's adapter folder of ``state`` (a state dict of the ``PeftModel`` ``model``) to ``out``.

    ``out/adapter_model.safetensors`` holds the adapters only (float32, peft's saved names
    ``base_model.model.<module>.lora_A.weight``), ``out/adapter_config.json`` peft's ``LoraConfig`` with
    ``base_model_name_or_path`` = ``base`` (the transformers folder they apply to), ``out/tunesmith.json``
    where they came from, and ``out/manifest.json`` the files' checksums. ``PeftModel.from_pretrained(
    HiggsAudioV2ForConditionalGeneration.from_pretrained(base), out)`` loads it. Replaced atomically.
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.fileio import atomic_write_json, give_umask_mode, swap_folder

    adapters = get_peft_model_state_dict(model, state_dict=state)
    adapters = {k: v.detach().float().contiguous().cpu() for k, v in adapters.items()}
    config = model.peft_config["default"]
    out = Path(out)
    with swap_folder(out) as tmp:
        save_file(adapters, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        give_umask_mode(tmp / ADAPTER_WEIGHTS)
        saved_base = config.base_model_name_or_path
        config.base_model_name_or_path = str(Path(base).resolve())
        try:
            config.save_pretrained(str(tmp))
        finally:
            config.base_model_name_or_path = saved_base
        give_umask_mode(tmp / ADAPTER_CONFIG)
        info = {"family": FAMILY, "base": str(Path(base).resolve())}
        if checkpoint is not None:
            info["checkpoint"] = str(Path(checkpoint).resolve())
            manifest = Path(checkpoint) / ckpt.MANIFEST
            if manifest.is_file():
                info["step"] = json.loads(manifest.read_text()).get("step")
        atomic_write_json(tmp / "tunesmith.json", info)
        ckpt.write_manifest(tmp, {"model_type": "peft-lora", "family": FAMILY})
    return out


def is_higgs_source(path: str | Path) -> bool:
    """True for a folder whose ``config.json`` says ``model_type: "higgs_audio_v2"`` (transformers or imported)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


@dataclasses.dataclass
class LoadedHiggs:
    """A HiggsAudio v2 model ready for inference, with everything needed to prompt it and decode audio."""

    model: nn.Module  # plain transformers model, eval mode, LoRA merged
    checkpoint: HiggsCheckpoint  # the source folder's facts (tokens, audio tokenizer dir…)
    text_tokenizer: Any
    audio_tokenizer: HiggsAudioTokenizer
    builder: HiggsPromptBuilder
    source: Path  # the transformers folder the base weights came from
    run_config: dict | None  # the tts run's resolved config when loaded from a run, else None


def rebuild_finetune(run_config: dict) -> HiggsFinetuneConfig:
    """The ``finetune`` section of a stored run config as a :class:`HiggsFinetuneConfig` for rebuilding the
    trained model: float32 base, no dropout, no activation checkpointing."""
    raw = dict(run_config.get("finetune") or {})
    lora_raw = dict(raw.get("lora") or {})
    known = {f.name for f in dataclasses.fields(HiggsLoraSettings)}
    lora = HiggsLoraSettings(**{k: v for k, v in lora_raw.items() if k in known})
    lora.base_dtype, lora.dropout = "fp32", 0.0
    return HiggsFinetuneConfig(mode=raw.get("mode", "lora"), lora=lora, gradient_checkpointing=False)


def load_checkpoint_weights(model: nn.Module, folder: Path) -> dict[str, torch.Tensor]:
    """Load a tts checkpoint's ``model`` weights (floating tensors as float32) into the rebuilt ``model`` and
    return them; UserError when they do not fit it exactly."""
    from tunesmith.artifacts import checkpoint as ckpt

    state = ckpt.load_weights(folder, "model")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{folder}: the weights do not fit the model rebuilt from its config "
            f"(missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]})"
        )
    return state


def _load_run(folder: Path, audio_tokenizer: str | Path | None) -> tuple[nn.Module, HiggsCheckpoint, dict]:
    """Rebuild a tts checkpoint's model (float32, LoRA merged) from its ``config.json`` and weights."""
    from tunesmith.artifacts import checkpoint as ckpt

    stored = ckpt.read_config(folder)
    meta = stored.get("meta") or {}
    run_config = stored.get("config") or {}
    if meta.get("family") != FAMILY or not meta.get("source"):
        raise UserError(
            f"{folder}: not a HiggsAudio v2 checkpoint (meta.family={meta.get('family')!r}); "
            "give a transformers HiggsAudio v2 folder, an imported one, or a `tunesmith train tts` run"
        )
    source = Path(meta["source"])
    if not source.is_dir():
        raise UserError(
            f"{folder}: its base model {source} is gone (the run's hf_init folder); "
            "it must stay next to the checkpoints — export the run with `tunesmith export` to move it"
        )
    checkpoint = read_higgs_checkpoint(source, audio_tokenizer)
    model = load_base_model(checkpoint, torch.float32)
    finetune = rebuild_finetune(run_config)  # LoRA merged in float32; the caller casts
    model = prepare_for_training(model, finetune, text_loss=bool(run_config.get("text_loss")))
    load_checkpoint_weights(model, folder)
    return merge_lora(model), checkpoint, run_config


def load_higgs(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    audio_tokenizer: str | Path | None = None,
    which: str = "best",
) -> LoadedHiggs:
    """Load a HiggsAudio v2 model for inference from a transformers folder, an imported folder, a tts run or
    one of its checkpoint folders (``which`` picks the run's checkpoint: best, then last)."""
    path = Path(path).expanduser()
    run_config: dict | None = None
    if is_higgs_source(path):
        checkpoint = read_higgs_checkpoint(path, audio_tokenizer)
        model = load_base_model(checkpoint, dtype)
        source = path
    else:
        from tunesmith.artifacts.checkpoint import find_checkpoint

        folder = find_checkpoint(path, which)
        if is_higgs_source(folder):
            return load_higgs(folder, device=device, dtype=dtype, audio_tokenizer=audio_tokenizer)
        model, checkpoint, run_config = _load_run(folder, audio_tokenizer)
        source = checkpoint.directory
        model = model.to(dtype)
    model = model.to(device).eval()
    text_tokenizer = load_text_tokenizer(checkpoint)
    tokenizer = load_higgs_tokenizer(checkpoint.audio_tokenizer_dir, device=device)
    return LoadedHiggs(
        model=model,
        checkpoint=checkpoint,
        text_tokenizer=text_tokenizer,
        audio_tokenizer=tokenizer,
        builder=prompt_builder(checkpoint, text_tokenizer),
        source=Path(source),
        run_config=run_config,
    )
