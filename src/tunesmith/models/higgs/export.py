"""``tunesmith export RUN --format hf --out DIR [--adapters-only]`` for a HiggsAudio v2 (tts) run.

Merged (the default; LoRA merged into the base, a full fine-tune as it is) — a transformers folder that loads
with ``HiggsAudioV2ForConditionalGeneration.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)``,
with no tunesmith installed::

    config.json, model.safetensors      save_pretrained of the merged model (in the base's stored dtype)
    generation_config.json              the base's (transformers' sampling / RAS settings kept)
    tokenizer.json, tokenizer_config.json, ..., chat_template.jinja   the base's text tokenizer and template
    processor_config.json               the base's, audio tokenizer path = DIR/audio_tokenizer (absolute)
    audio_tokenizer/                    the audio tokenizer (config.json + weights + its manifest)
    manifest.json                       sha256 and size of every file (checked by ``tunesmith verify DIR``)

Adapters only (a LoRA run) — peft's adapter folder: ``adapter_config.json`` (``base_model_name_or_path`` = the
run's base model folder, ``RUN/hf_init``), ``adapter_model.safetensors``, ``tunesmith.json`` (where it came
from) and ``manifest.json``; ``PeftModel.from_pretrained(HiggsAudioV2ForConditionalGeneration.from_pretrained(
BASE), DIR)`` loads it.

transformers' ``HiggsAudioV2Processor.from_pretrained(DIR)`` passes ``audio_tokenizer_name_or_path`` to
``from_pretrained`` as it is (a relative path would resolve against the working directory, else be taken for
a Hub repo id), so an export names the absolute path of its own ``audio_tokenizer/`` copy: plain transformers
loads the processor from anywhere. After the folder is moved that path is stale for transformers (load the
processor with ``audio_tokenizer=`` given, or re-export); tunesmith resolves it to the moved folder's
``audio_tokenizer/`` and says so. Loading the processor needs torchaudio in transformers 5.23.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.artifacts.modeldir import guard_output
from tunesmith.errors import UserError
from tunesmith.fileio import give_umask_mode, link_or_copy, swap_folder
from tunesmith.models.higgs.checkpoint import AUDIO_TOKENIZER_SUBDIR, MODEL_TYPE, PROCESSOR_CONFIG
from tunesmith.models.higgs.importer import (
    TEMPLATE_FILES,
    TEXT_TOKENIZER_FILES,
    relative_processor_config,
    write_audio_tokenizer,
    write_tree_manifest,
)
from tunesmith.models.higgs.verify import verify_higgs_dir

log = logging.getLogger(__name__)

GENERATION_CONFIG = "generation_config.json"
ADAPTER_INFO = "tunesmith.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def higgs_run_checkpoint(source: str | Path, which: str = "best") -> Path | None:
    """The checkpoint folder of a HiggsAudio v2 (tts) run, checkpoint or tunesmith export (``meta.family``
    says ``higgs_audio_v2``), a transformers HiggsAudio v2 folder itself; None for anything else."""
    from tunesmith.models.higgs.model import FAMILY, is_higgs_source

    path = Path(source).expanduser()
    if is_higgs_source(path):
        return path
    try:
        folder = ckpt.find_checkpoint(path, which)
        config = ckpt.read_config(folder)
    except UserError:
        return None
    meta = config.get("meta") if isinstance(config.get("meta"), dict) else {}
    return folder if meta.get("family") == FAMILY or is_higgs_source(folder) else None


def stored_dtype(config: dict[str, Any]) -> torch.dtype:
    """The dtype a transformers config.json records (``dtype``, older ``torch_dtype``); float32 if none."""
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32").removeprefix("torch.")
    return _DTYPES.get(name, torch.float32)


def _copy_side_files(base: Path, out: Path) -> None:
    """The base's text tokenizer files, chat template and generation config into ``out`` (hard links)."""
    for name in (*TEXT_TOKENIZER_FILES, *TEMPLATE_FILES, GENERATION_CONFIG):
        if (base / name).is_file():
            link_or_copy(base / name, out / name)


def export_merged(source: str | Path, out: str | Path, *, which: str = "best", force: bool = False) -> Path:
    """A transformers HiggsAudio v2 folder ``out`` of the run/checkpoint/folder ``source`` (LoRA merged)."""
    from tunesmith.models.higgs.model import load_higgs

    out = Path(out).expanduser()
    guard_output(out, force=force)
    folder = higgs_run_checkpoint(source, which)
    if folder is None:
        raise UserError(f"{source}: not a HiggsAudio v2 run, checkpoint or model folder")
    loaded = load_higgs(folder, which=which)
    base = loaded.checkpoint.directory
    dtype = stored_dtype(loaded.checkpoint.config)
    model = loaded.model.to(dtype)
    with swap_folder(out) as tmp:
        model.save_pretrained(str(tmp))
        _copy_side_files(base, tmp)
        own_tokenizer = str(out.resolve() / AUDIO_TOKENIZER_SUBDIR)  # where it lies once the folder is swapped in
        (tmp / PROCESSOR_CONFIG).write_text(
            json.dumps(relative_processor_config(loaded.checkpoint, own_tokenizer), indent=2, sort_keys=True) + "\n",
            encoding="utf-8",
        )
        for path in tmp.iterdir():
            if path.is_file():
                give_umask_mode(path)  # save_pretrained's safetensors are owner-only
        write_audio_tokenizer(loaded.checkpoint.audio_tokenizer_dir, tmp / AUDIO_TOKENIZER_SUBDIR)
        mode = ((loaded.run_config or {}).get("finetune") or {}).get("mode") if loaded.run_config else None
        write_tree_manifest(
            tmp,
            {
                "model_type": MODEL_TYPE,
                "exported_from": str(Path(folder).resolve()),
                "base": str(Path(base).resolve()),
                "finetune": mode or "none",
                "lora_merged": mode == "lora",
            },
        )
        problems = verify_higgs_dir(tmp, audio_tokenizer=tmp / AUDIO_TOKENIZER_SUBDIR)
        if problems:
            raise UserError("the exported directory does not verify:\n  - " + "\n  - ".join(problems))
    log.info("exported %s as a transformers HiggsAudio v2 folder to %s", folder, out)
    return out


def _own_adapter_export(out: Path) -> bool:
    """An adapter folder this module (or the tts task) wrote: tunesmith.json says the family and the manifest
    lists every file there."""
    from tunesmith.models.higgs.model import FAMILY

    try:
        info = json.loads((out / ADAPTER_INFO).read_text())
        listed = json.loads((out / ckpt.MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    entries = {p.name for p in out.iterdir()} - {ckpt.MANIFEST}
    return (
        isinstance(info, dict) and info.get("family") == FAMILY and isinstance(listed, dict) and entries <= set(listed)
    )


def export_adapters(source: str | Path, out: str | Path, *, which: str = "best", force: bool = False) -> Path:
    """peft's adapter folder ``out`` of a LoRA tts run's checkpoint (see the module docstring)."""
    from tunesmith.models.higgs.checkpoint import read_higgs_checkpoint
    from tunesmith.models.higgs.model import (
        load_base_model,
        load_checkpoint_weights,
        prepare_for_training,
        rebuild_finetune,
        save_adapter,
    )

    out = Path(out).expanduser()
    if out.is_dir() and _own_adapter_export(out):
        if not force:
            raise UserError(
                f"{out}: already holds an adapter folder; pass --force to replace it, or choose another --out"
            )
    else:
        guard_output(out, force=force)
    folder = higgs_run_checkpoint(source, which)
    if folder is None:
        raise UserError(f"{source}: not a HiggsAudio v2 run or checkpoint")
    stored = ckpt.read_config(folder)
    meta, run_config = stored.get("meta") or {}, stored.get("config") or {}
    finetune = rebuild_finetune(run_config)
    if not meta.get("source") or finetune.mode != "lora":
        what = "a transformers model folder" if not meta.get("source") else f"finetune.mode={finetune.mode}"
        raise UserError(
            f"{folder}: --adapters-only needs a LoRA run (this is {what}, which has no adapters); "
            "export it without --adapters-only"
        )
    checkpoint = read_higgs_checkpoint(meta["source"])
    model = prepare_for_training(load_base_model(checkpoint), finetune, text_loss=bool(run_config.get("text_loss")))
    state = load_checkpoint_weights(model, folder)
    save_adapter(model, state, out, base=checkpoint.directory, checkpoint=folder)
    log.info("exported the LoRA adapters of %s to %s (base %s)", folder, out, checkpoint.directory)
    return out


def export_higgs(
    source: str | Path, out: str | Path, *, which: str = "best", adapters_only: bool = False, force: bool = False
) -> Path:
    """``tunesmith export SOURCE --format hf --out OUT [--adapters-only]`` for HiggsAudio v2."""
    if adapters_only:
        return export_adapters(source, out, which=which, force=force)
    return export_merged(source, out, which=which, force=force)
