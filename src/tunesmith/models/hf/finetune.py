"""Fine-tuning an LM — fully or with LoRA — from a Hugging Face MusicGen or an imported model directory.

``tunesmith train lm PRESET data=DIR init_from=hf:MUSICGEN_DIR [finetune.mode=lora ...]``:

* :func:`open_init_source` turns ``init_from`` into an :class:`InitSource`. ``hf:DIR`` (or a directory
  whose config.json says ``musicgen``) is imported once into ``RUN/hf_init`` (reused while the source is
  unchanged); a directory written by ``tunesmith import hf`` or ``tunesmith merge`` is used as is. Any
  other ``init_from`` (a tunesmith run) is not a source here: the engine loads it as usual.
* :meth:`InitSource.apply_to` makes the run's config describe the source: the architecture keys of
  ``model`` (see :data:`~tunesmith.models.hf.convert.ARCHITECTURE_KEYS`) come from the source, training
  settings (dropout, CFG dropout, text length) stay the run's; ``codec``/``codec_bandwidth`` default to
  the source's EnCodec. Checkpoints then record the model that is really trained.
* :func:`prepare_model` loads the source weights strictly, freezes what a MusicGen does not have (the
  null condition; an identity text projection), then applies ``finetune``: LoRA (peft), the base dtype,
  gradient checkpointing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.config import ConfigError, Resolved, from_dict, merge_into, to_dict
from tunesmith.errors import UserError
from tunesmith.fileio import link_tree, swap_folder
from tunesmith.models.hf import convert
from tunesmith.models.hf.importer import CODEC_DIR, LM_MODEL_TYPE, import_hf, is_imported_dir, resolve_t5_path
from tunesmith.models.lm.lora import LoraSettings, apply_lora
from tunesmith.models.lm.model import LMConfig

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
INIT_DIR = "hf_init"


@dataclasses.dataclass
class FinetuneConfig:
    """``finetune.*`` of the LM task."""

    mode: Literal["full", "lora"] = "full"
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False  # recompute each transformer block in backward (less activation memory)


# --------------------------------------------------------------------------- the source


@dataclasses.dataclass
class InitSource:
    """An imported MusicGen: its model directory, LM config, weights and codec."""

    folder: Path
    lm_config: LMConfig
    state: dict[str, Tensor]
    codec: str
    codec_bandwidth: float
    reference: str  # what init_from said

    def apply_to(self, resolved: Resolved) -> Resolved:
        """``resolved`` with the source's architecture (and codec, where unset); a new Resolved."""
        data = json.loads(json.dumps(resolved.data))
        source_model = to_dict(self.lm_config)
        replaced = {}
        for key in convert.ARCHITECTURE_KEYS:
            *path, leaf = key.split(".")
            src, dst = source_model, data["model"]
            for part in path:
                src, dst = src[part], dst[part]
            if dst[leaf] != src[leaf]:
                replaced[f"model.{key}"] = (dst[leaf], src[leaf])
                dst[leaf] = src[leaf]
        shown = {k: v for k, v in replaced.items() if k != "model.conditioner.t5_path"}
        if shown:
            changes = ", ".join(f"{k.removeprefix('model.')}: {old!r} → {new!r}" for k, (old, new) in shown.items())
            log.info("init_from %s: the model's architecture comes from the source (%s)", self.reference, changes)
        if not data.get("codec"):
            data["codec"] = self.codec
            if not data.get("codec_bandwidth"):
                data["codec_bandwidth"] = self.codec_bandwidth
        cls = type(resolved.config)
        try:
            data = merge_into(to_dict(cls()), data, cls)
        except ConfigError as err:
            raise UserError(f"init_from {self.reference}: {err}") from err
        return dataclasses.replace(resolved, config=from_dict(cls, data), data=data)


def _hf_path(init_from: str) -> Path | None:
    """The MusicGen directory ``init_from`` names (``hf:DIR`` or a ``musicgen`` DIR), else None."""
    from tunesmith.models.codec.loading import model_type

    if init_from.startswith(HF_PREFIX):
        path = Path(init_from[len(HF_PREFIX) :]).expanduser()
        if not path.is_dir():
            raise UserError(f"init_from={init_from}: {path} is not a directory (a local transformers MusicGen)")
        return path
    path = Path(init_from).expanduser()
    return path if path.is_dir() and model_type(path) in ("musicgen", "musicgen_melody") else None


def _imported_fingerprint(folder: Path) -> str | None:
    try:
        return (ckpt.read_config(folder).get("meta") or {}).get("source_fingerprint")
    except UserError:
        return None


def _import_once(source: Path, workdir: Path, cache: Path | None = None) -> Path:
    """``workdir/hf_init``: the import of ``source``, redone only when the source changed.

    With ``cache`` (e.g. the runs folder's ``.hf_imports``), the import is made once per source content
    under ``cache/<fingerprint>`` and hard-linked into each run: runs share the disk, yet each stays whole.
    """
    from tunesmith.models.hf.importer import config_fingerprint
    from tunesmith.models.hf.verify import require_hf_dir

    require_hf_dir(source, "musicgen")
    fingerprint = config_fingerprint(source)
    target = workdir / INIT_DIR
    if target.is_dir():
        if _imported_fingerprint(target) == fingerprint and not verify_imported_dir(target):
            return target
        log.info("%s: the source changed or the import is damaged; importing again", target)
        shutil.rmtree(target)
    if cache is None:
        log.info("importing %s into %s", source, target)
        return import_hf(source, target)
    shared = cached_import(source, cache)
    with swap_folder(target) as tmp:
        link_tree(shared, tmp)
        config = json.loads((tmp / ckpt.CONFIG).read_text())  # the T5 path must name this run's copy
        config["config"]["model"]["conditioner"]["t5_path"] = str(target.resolve() / "t5")
        (tmp / ckpt.CONFIG).unlink()  # a hard link: never write through it into the shared import
        (tmp / ckpt.CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / ckpt.MANIFEST).unlink()
        ckpt.write_manifest(tmp, {"model_type": LM_MODEL_TYPE})
    return target


def cached_import(source: Path, cache: Path) -> Path:
    """``cache/<fingerprint[:16]>``: the import of the transformers MusicGen ``source``, made now unless an
    intact import of the same content is there (shared by ``init_from=hf:`` runs and inference)."""
    from tunesmith.models.hf.importer import config_fingerprint
    from tunesmith.models.hf.verify import require_hf_dir

    require_hf_dir(source, "musicgen")
    fingerprint = config_fingerprint(source)
    shared = Path(cache) / fingerprint[:16]
    if shared.is_dir() and _imported_fingerprint(shared) == fingerprint and not verify_imported_dir(shared):
        log.info("using the import of %s in %s", source, shared)
        return shared
    log.info("importing %s into %s", source, shared)
    shared.parent.mkdir(parents=True, exist_ok=True)
    return import_hf(source, shared, force=True)  # the cache's own import, stale or damaged, is replaced


def verify_imported_dir(folder: Path) -> list[str]:
    """Problems of an imported model directory, its t5/ and codec/ sub-folders included."""
    problems = ckpt.verify_folder(folder)
    for sub in ("t5", CODEC_DIR):
        if (folder / sub).is_dir():
            problems.extend(ckpt.verify_folder(folder / sub))
    return problems


def open_init_source(init_from: str, workdir: str | Path, cache: str | Path | None = None) -> InitSource | None:
    """The MusicGen behind ``init_from`` (imported into ``workdir/hf_init`` when it is a transformers
    directory, through ``cache`` when given: see :func:`_import_once`).

    None when ``init_from`` is not a MusicGen (e.g. a tunesmith run): the engine loads those itself.
    """
    if not init_from:
        return None
    hf_dir = _hf_path(init_from)
    if hf_dir is not None:
        folder = _import_once(hf_dir, Path(workdir), Path(cache) if cache is not None else None)
    elif is_imported_dir(Path(init_from).expanduser()):
        folder = Path(init_from).expanduser()
    else:
        return None
    problems = verify_imported_dir(folder)
    if problems:
        raise UserError(f"init_from={init_from}: {folder} is damaged:\n  - " + "\n  - ".join(problems))
    raw = ckpt.read_config(folder)
    run_cfg = raw.get("config") or {}
    try:
        merged = merge_into(to_dict(LMConfig()), run_cfg.get("model") or {}, LMConfig)
        lm_cfg = from_dict(LMConfig, merged)
    except (ConfigError, ValueError) as err:
        raise UserError(f"{folder}/config.json: bad LM model section: {err}") from err
    lm_cfg.conditioner.t5_path = resolve_t5_path(lm_cfg.conditioner.t5_path, folder)
    codec = str(run_cfg.get("codec") or CODEC_DIR)
    codec_path = Path(codec) if Path(codec).is_absolute() else folder / codec
    from tunesmith.models.lm.lora import has_lora, merge_lora_state

    state = ckpt.load_weights(folder, "model")
    if has_lora(state):
        state = merge_lora_state(state)
    return InitSource(
        folder=folder,
        lm_config=lm_cfg,
        state=state,
        codec=str(codec_path.resolve()),
        codec_bandwidth=float(run_cfg.get("codec_bandwidth") or 0.0),
        reference=init_from,
    )


# --------------------------------------------------------------------------- the model


def frozen_for_musicgen(model: nn.Module) -> list[str]:
    """Parameters a MusicGen has no counterpart for: the null condition, and an identity text projection."""
    names = [n for n in convert.NOT_IN_MUSICGEN if n in dict(model.named_parameters())]
    for part in ("text", "chroma"):  # MusicGen-melody's chroma projection too
        proj = getattr(getattr(getattr(model, "conditioner", None), part, None), "proj", None)
        if isinstance(proj, nn.Linear) and proj.in_features == proj.out_features:
            with torch.no_grad():
                eye = torch.eye(proj.in_features)
                identity = torch.equal(proj.weight.float(), eye) and not bool(proj.bias.any())
            if identity:
                names += [f"conditioner.{part}.proj.weight", f"conditioner.{part}.proj.bias"]
    return names


def enable_gradient_checkpointing(transformer: nn.Module) -> None:
    """Recompute every block of ``transformer`` in backward while training without a KV cache.

    Non-reentrant checkpointing: works when no input requires grad (a frozen embedding under LoRA) and
    with DDP. Blocks run normally in eval, under no_grad and when decoding with a cache.
    """
    for block in transformer.layers:
        if getattr(block, "_checkpointed", False):
            continue
        plain = block.forward

        def forward(*args: Any, _plain: Any = plain, _block: nn.Module = block) -> Tensor:
            cache = args[5] if len(args) > 5 else None
            if _block.training and torch.is_grad_enabled() and cache is None:
                return checkpoint(_plain, *args, use_reentrant=False)
            return _plain(*args)

        block.forward = forward
        block._checkpointed = True


def prepare_model(model: nn.Module, finetune: FinetuneConfig, source: InitSource | None) -> nn.Module:
    """Load the source's weights (strict), freeze what a MusicGen lacks, apply LoRA / checkpointing."""
    if source is not None:
        missing, unexpected = model.load_state_dict(source.state, strict=False)
        if missing or unexpected:
            raise UserError(
                f"init_from {source.reference}: the weights do not fit the model (missing {missing[:4]}, "
                f"unexpected {unexpected[:4]})"
            )
        frozen = frozen_for_musicgen(model)
        params = dict(model.named_parameters())
        for name in frozen:
            params[name].requires_grad_(False)
        log.info("init_from %s: loaded %d tensors; kept frozen: %s", source.reference, len(source.state), frozen)
    if finetune.mode == "lora":
        apply_lora(model, finetune.lora)
    if finetune.gradient_checkpointing:
        enable_gradient_checkpointing(model.transformer)
    return model


# --------------------------------------------------------------------------- adapters of a run


def write_run_adapter(run_dir: Path, run_config: dict, finetune: FinetuneConfig, base: str | None) -> Path | None:
    """``RUN/adapter``: the LoRA adapters of the run's best checkpoint (else its last), EMA preferred.

    ``base`` names the model the adapters apply to (the imported MusicGen, or init_from); None when the
    run started from scratch, whose base weights live only in the run (merge the run folder instead).
    """
    from tunesmith.models.lm.lora import write_adapter

    checkpoints = Path(run_dir) / "checkpoints"
    folder = next((checkpoints / n for n in ("best", "last") if (checkpoints / n / ckpt.MANIFEST).is_file()), None)
    if folder is None:
        return None
    state = ckpt.load_weights(folder, "model")
    codec = str(run_config.get("codec") or "")
    if codec and Path(codec).expanduser().exists():
        codec = str(Path(codec).expanduser().resolve())
    info = {
        "base": base,
        "model": run_config.get("model"),
        "codec": codec,
        "codec_bandwidth": run_config.get("codec_bandwidth") or 0.0,
        "checkpoint": str(folder.resolve()),
        "step": (json.loads((folder / ckpt.MANIFEST).read_text()).get("step")),
    }
    # the run's own adapter, rewritten after every checkpoint
    return write_adapter(Path(run_dir) / "adapter", state, finetune.lora, info, force=True)
