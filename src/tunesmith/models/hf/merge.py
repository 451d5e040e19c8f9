"""``tunesmith merge RUN_OR_ADAPTER --out DIR``: LoRA adapters merged into their base → a model directory.

The source is a LoRA run (its best checkpoint, EMA weights preferred), a checkpoint folder, or an
adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, whose config names its base).
The result is a tunesmith LM model directory with plain weights, its T5 under ``t5/`` and its codec
under ``codec/``, so it generates, exports and fine-tunes again like any other.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from torch import Tensor

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.artifacts.modeldir import guard_output
from tunesmith.errors import UserError
from tunesmith.fileio import swap_folder
from tunesmith.models.hf import convert
from tunesmith.models.hf.export import find_codec
from tunesmith.models.hf.importer import (
    CODEC_DIR,
    LM_MODEL_TYPE,
    SOURCE_FORMAT,
    T5_DIR,
    resolve_t5_path,
    write_lm_config,
)
from tunesmith.models.lm.loading import lm_config_of, read_lm_checkpoint
from tunesmith.models.lm.lora import ADAPTER_CONFIG, apply_adapter_to_base, has_lora, merge_lora_state, read_adapter
from tunesmith.models.lm.model import LMConfig

log = logging.getLogger(__name__)


def _copy_codec(codec_path: Path, out: Path) -> None:
    """The codec as ``out``: a transformers EnCodec directory, or a tunesmith codec model directory."""
    from tunesmith.models.codec.loading import model_type

    if model_type(codec_path) in ("encodec", "musicgen"):
        from tunesmith.models.hf.encodec import write_encodec_dir

        write_encodec_dir(codec_path, out)
        ckpt.write_manifest(out)
    else:
        from tunesmith.models.export import export_tunesmith

        export_tunesmith(codec_path, out)


def write_merged_dir(
    out: Path,
    lm_cfg: LMConfig,
    state: dict[str, Tensor],
    *,
    codec_path: Path,
    bandwidth: float,
    meta: dict,
    force: bool = False,
) -> Path:
    """A tunesmith LM model directory holding ``state`` (plain weights), its T5 and its codec."""
    out = out.expanduser().resolve()
    guard_output(out, force=force)
    with swap_folder(out) as tmp:
        if lm_cfg.conditioner.text == "t5":
            t5 = resolve_t5_path(lm_cfg.conditioner.t5_path, None)
            if not t5 or not Path(t5).is_dir():
                raise UserError(f"the LM's T5 directory is gone (model.conditioner.t5_path={t5!r})")
            shutil.copytree(t5, tmp / T5_DIR)
            if not (tmp / T5_DIR / ckpt.MANIFEST).is_file():
                ckpt.write_manifest(tmp / T5_DIR)
            lm_cfg.conditioner.t5_path = str(out / T5_DIR)
        _copy_codec(codec_path, tmp / CODEC_DIR)
        ckpt.save_tensors(tmp / ckpt.WEIGHTS, state)
        if lm_cfg.conditioner.text == "t5" and not convert.exportable_problems(lm_cfg):
            meta = {**meta, "source_format": SOURCE_FORMAT}
        write_lm_config(tmp, lm_cfg, codec=CODEC_DIR, codec_bandwidth=bandwidth, meta={"task": "lm", **meta})
        ckpt.write_manifest(tmp, {"model_type": LM_MODEL_TYPE})
    return out


def merge_adapter_folder(folder: Path) -> tuple[LMConfig, dict[str, Tensor], Path, float, dict]:
    """(LM config, merged weights, codec path, bandwidth, meta) of an adapter folder and the base it names."""
    config, adapter = read_adapter(folder)
    info = config["tunesmith"]
    base_ref = str(info.get("base") or "")
    if not base_ref:
        raise UserError(
            f"{folder / ADAPTER_CONFIG}: names no base model (the run trained LoRA from scratch, so its base "
            f"weights live only in the run): merge the run folder instead ({info.get('checkpoint', 'RUN')})"
        )
    try:
        base_folder = ckpt.find_checkpoint(base_ref, which="best")
    except UserError as err:
        raise UserError(f"{folder}: its base model {base_ref} cannot be opened: {err}") from err
    base = ckpt.load_weights(base_folder, "model")
    if has_lora(base):
        base = merge_lora_state(base)
    state = merge_lora_state(apply_adapter_to_base(base, adapter))
    lm_cfg = lm_config_of({"model": info.get("model") or {}}, folder)
    base_cfg = ckpt.read_config(base_folder).get("config") or {}
    codec = Path(str(info.get("codec") or "")) if info.get("codec") else find_codec(base_cfg, base_folder)
    if not codec.exists():
        codec = find_codec(base_cfg, base_folder)
    bandwidth = float(info.get("codec_bandwidth") or base_cfg.get("codec_bandwidth") or 0.0)
    return lm_cfg, state, codec, bandwidth, {"merged_from": str(folder.resolve()), "base": str(base_folder)}


def merge(source: str | Path, out: str | Path, *, which: str = "best", force: bool = False) -> Path:
    """Merge the LoRA adapters of a run, checkpoint or adapter folder into a tunesmith model directory
    (an existing ``out`` only when tunesmith wrote it and ``force`` is given)."""
    source = Path(source).expanduser()
    guard_output(Path(out).expanduser(), force=force)
    if (source / ADAPTER_CONFIG).is_file():
        lm_cfg, state, codec, bandwidth, meta = merge_adapter_folder(source)
    else:
        folder = ckpt.find_checkpoint(source, which=which)
        if not has_lora(ckpt.load_weights(folder, "model")):
            raise UserError(f"{folder}: has no LoRA adapters to merge (train with finetune.mode=lora)")
        lm = read_lm_checkpoint(folder)
        folder, run_cfg, lm_cfg, state = lm.folder, lm.run_config, lm.config, lm.weights
        codec = find_codec(run_cfg, folder)
        bandwidth = float(run_cfg.get("codec_bandwidth") or 0.0)
        meta = {"merged_from": str(folder.resolve())}
    lm_cfg.conditioner.t5_path = resolve_t5_path(lm_cfg.conditioner.t5_path, None)
    result = write_merged_dir(Path(out), lm_cfg, state, codec_path=codec, bandwidth=bandwidth, meta=meta, force=force)
    log.info("merged the LoRA adapters of %s into %s", source, result)
    return result


def merge_to_hf(source: str | Path, out: str | Path, *, which: str = "best", force: bool = False) -> Path:
    """:func:`merge`, then :func:`~tunesmith.models.hf.export.export_hf`: a transformers MusicGen directory."""
    import tempfile

    from tunesmith.models.hf.export import export_hf

    out = Path(out).expanduser()
    guard_output(out, force=force)  # before the merge's work, not after
    with tempfile.TemporaryDirectory(dir=out.resolve().parent) as tmp:
        merged = merge(source, Path(tmp) / "merged", which=which)
        return export_hf(merged, out, force=force)
