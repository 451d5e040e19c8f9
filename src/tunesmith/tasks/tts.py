"""The tts task: fine-tune a HiggsAudio v2 speech model (LoRA or full) on a prepared speech dataset.

``tunesmith train tts higgs-lora data=DIR init_from=hf:HIGGS_DIR`` (``higgs-full`` for full fine-tuning;
``init_from`` may also name a folder written by ``tunesmith import hf``):

* ``prepare`` imports the source into ``RUN/hf_init`` (:func:`tunesmith.models.higgs.importer.import_higgs`:
  hard links, the audio tokenizer inside), opens its text tokenizer and audio tokenizer and the dataset's
  token cache encoded with that audio tokenizer (built once, main rank first; keyed by its weights).
* items are whole utterances with their transcript (and, with ``dataset.reference=same_speaker``, a voice
  reference of the same speaker) in the chat format the model was trained with
  (:mod:`tunesmith.data.datasets.speech_prompts`, :class:`~tunesmith.models.higgs.prompt.HiggsPromptBuilder`);
* the loss is transformers' next-token cross-entropy on the assistant audio only, summed over audio tokens
  (:func:`~tunesmith.models.higgs.loss.higgs_loss`); the engine divides by the audio target tokens of the
  whole update (accumulation and DDP equal one big batch). ``text_loss=true`` adds
  ``text_loss_weight`` × the summed text cross-entropy (a model with a text head only). Logged: ``loss``
  (mean CE per audio token), ``ce_qK`` per codebook, ``text_ce`` per text token.

Outputs besides the engine's checkpoints: ``RUN/hf_init`` (the base model, needed to load the run),
``RUN/adapter`` with LoRA (peft's adapter folder of the best — else last — checkpoint:
``adapter_model.safetensors`` + ``adapter_config.json``, loadable with ``PeftModel.from_pretrained(base,
RUN/adapter)`` on the model in ``RUN/hf_init``), and ``RUN/samples/epoch_NNNN/*.wav`` from the generate stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from tunesmith.config import OptimConfig, Resolved, TrainConfig, ranged
from tunesmith.data.datasets.speech_prompts import SpeechItem, SpeechPrompts, collate_prompts
from tunesmith.engine.solver import LossOutput, Solver
from tunesmith.errors import UserError
from tunesmith.models.higgs.model import FAMILY, HiggsFinetuneConfig

log = logging.getLogger("tunesmith.tts")

HF_PREFIX = "hf:"
INIT_DIR = "hf_init"
IMPORTS_DIR = ".hf_imports"  # the runs folder's shared import cache (as for MusicGen)
ADAPTER_DIR = "adapter"


@dataclasses.dataclass
class TTSDatasetConfig:
    batch_size: int = ranged(4, ge=1)
    reference: Literal["none", "same_speaker"] = "none"  # a voice reference of the same speaker in the prompt
    reference_probability: float = ranged(1.0, ge=0, le=1)  # share of items given a reference (when one exists)
    max_tokens: int = ranged(0, ge=0)  # longest prompt trained on; 0 = the model's max_position_embeddings


@dataclasses.dataclass
class TTSGenerateConfig:
    """Samples written by the generate stage (never part of a run's signature): greedy decoding."""

    num_samples: int = ranged(2, ge=0)  # 0 = no samples
    texts: list[str] = dataclasses.field(default_factory=list)  # empty = transcripts from the valid split
    max_seconds: float = ranged(10.0, gt=0, le=600)


@dataclasses.dataclass
class TTSTaskConfig:
    data: str = ""  # prepared speech dataset (tunesmith prepare ... --sample-rate 24000)
    init_from: str = ""  # hf:HIGGS_DIR, a transformers HiggsAudio v2 folder, or an imported one
    audio_tokenizer: str = ""  # the audio tokenizer folder, when the source does not carry it
    text_loss: bool = False  # also train the text head on the prompt's text labels (needs a text head)
    text_loss_weight: float = ranged(1.0, ge=0)
    dataset: TTSDatasetConfig = dataclasses.field(default_factory=TTSDatasetConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    generate: TTSGenerateConfig = dataclasses.field(default_factory=TTSGenerateConfig)
    finetune: HiggsFinetuneConfig = dataclasses.field(default_factory=HiggsFinetuneConfig)


def source_path(init_from: str) -> Path:
    """The HiggsAudio folder ``init_from`` names (``hf:DIR`` or ``DIR``); UserError naming what was found."""
    from tunesmith.models.higgs.model import is_higgs_source

    if not init_from:
        raise UserError("init_from= is required: hf:DIR of a transformers HiggsAudio v2 model (or an imported one)")
    path = Path(init_from.removeprefix(HF_PREFIX)).expanduser()
    if not path.is_dir():
        raise UserError(f"init_from={init_from}: {path} is not a directory (a local HiggsAudio v2 model folder)")
    if not is_higgs_source(path):
        found = "no config.json"
        config = path / "config.json"
        if config.is_file():
            try:
                data = json.loads(config.read_text(encoding="utf-8"))
                found = f"model_type {data.get('model_type')!r}" if isinstance(data, dict) else "a config.json"
            except ValueError:
                found = "an unreadable config.json"
        from tunesmith.models.higgs.export import higgs_run_checkpoint

        checkpoint = higgs_run_checkpoint(path, "best")
        if checkpoint is not None:  # a tts run or checkpoint: continue from its (merged) weights
            return checkpoint
        raise UserError(
            f"init_from={init_from}: {path} is not a HiggsAudio v2 model folder ({found}; expected model_type "
            "'higgs_audio_v2') nor a tts run or checkpoint"
        )
    return path


def merged_source(checkpoint: Path, cache: Path) -> Path:
    """A tts run's checkpoint as a transformers folder to start from: its weights with LoRA merged, exported once
    per checkpoint content into ``cache/run-<sha>`` (reused while the checkpoint is unchanged)."""
    import hashlib

    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.models.higgs.export import export_merged
    from tunesmith.models.higgs.verify import verify_higgs_dir

    key = hashlib.sha256((checkpoint / ckpt.MANIFEST).read_bytes()).hexdigest()[:16]
    out = cache / f"run-{key}"
    if out.is_dir() and not verify_higgs_dir(out):
        log.info("init_from %s: using its merged weights in %s", checkpoint, out)
        return out
    log.info("init_from %s: a tts checkpoint; merging its weights into %s", checkpoint, out)
    return export_merged(checkpoint, out, force=True)


def import_source(source: Path, run_dir: Path, cache: Path, audio_tokenizer: str | None = None) -> Path:
    """``run_dir/hf_init``: the source imported once per content into ``cache/higgs-<fingerprint>`` (on the runs
    folder's file system), then hard-linked into the run — runs share the disk, yet each stays whole. Both
    imports are reused while the source is unchanged (IO's ``import_higgs`` is idempotent)."""
    from tunesmith.models.higgs.importer import higgs_fingerprint, import_higgs

    key = higgs_fingerprint(source, audio_tokenizer)[:16]
    shared = import_higgs(source, cache / f"higgs-{key}", audio_tokenizer=audio_tokenizer, force=True)
    return import_higgs(shared, run_dir / INIT_DIR, force=True)


class TTSSolver(Solver):
    task = "tts"
    config_class = TTSTaskConfig
    best_metric = "loss"
    best_mode = "min"
    target_unit = "tokens"  # audio target tokens: frames × codebooks
    ddp_find_unused_parameters: ClassVar[bool] = False  # every trainable parameter is used (text head frozen)

    # ------------------------------------------------------------------ set-up

    def preflight(self) -> list[str]:
        problems = []
        if not self.cfg.data:
            problems.append("data= is required: a prepared speech dataset (tunesmith prepare SRC --sample-rate 24000)")
        if not self.cfg.init_from:
            problems.append("init_from= is required: hf:DIR of a transformers HiggsAudio v2 model (or an imported one)")
        if self.cfg.text_loss_weight == 0 and self.cfg.text_loss:
            problems.append("text_loss=true with text_loss_weight=0: set a weight > 0 or text_loss=false")
        return problems

    def prepare(self) -> Resolved | None:
        """Import the source into RUN/hf_init, open its tokenizers and the dataset's token cache (main rank first)."""
        from tunesmith.data.datasets.tokens import open_token_cache
        from tunesmith.engine.distributed import main_rank_first
        from tunesmith.models.higgs.checkpoint import load_text_tokenizer, prompt_builder, read_higgs_checkpoint
        from tunesmith.models.higgs.model import is_higgs_source
        from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer
        from tunesmith.runtime import progress_enabled

        cfg = self.cfg
        source = source_path(cfg.init_from)
        audio_tokenizer = cfg.audio_tokenizer or None
        shared = self.run.dir.parent.parent / IMPORTS_DIR  # one import per source, hard-linked into each run
        if not is_higgs_source(source):  # a tts run's checkpoint: its merged weights are the new base
            checkpoint = source
            source = main_rank_first(self.dist.is_main, lambda: merged_source(checkpoint, shared))
        self.hf_init = main_rank_first(
            self.dist.is_main, lambda: import_source(source, self.run.dir, shared, audio_tokenizer)
        )
        self.checkpoint = read_higgs_checkpoint(self.hf_init)
        if cfg.text_loss and not self.checkpoint.has_text_head:
            raise UserError(
                f"text_loss=true but {source} has no text head (no text_lm_head.weight in its weights); "
                "train with text_loss=false (the audio loss only), or start from a checkpoint saved with a text head "
                "(HiggsAudioV2ForConditionalGeneration(config, use_text_head=True))"
            )
        self.text_tokenizer = load_text_tokenizer(self.checkpoint)
        self.builder = prompt_builder(self.checkpoint, self.text_tokenizer)
        self.codec = load_higgs_tokenizer(self.checkpoint.audio_tokenizer_dir, device=self.device)
        progress = progress_enabled(cfg.train.log.progress) and self.dist.is_main
        log.info(
            "reading the token cache of %s for the audio tokenizer of %s (built first if missing)", cfg.data, source
        )
        self.splits = main_rank_first(
            self.dist.is_main, lambda: open_token_cache(cfg.data, self.codec, str(self.device), progress=progress)
        )
        return None

    def build_model(self) -> nn.Module:
        from tunesmith.models.higgs.model import load_base_model, prepare_for_training

        model = load_base_model(self.checkpoint, torch.float32)
        return prepare_for_training(model, self.cfg.finetune, text_loss=self.cfg.text_loss)

    def init_weights_from(self) -> str:
        return ""  # build_model loaded the source's weights

    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        """Under ``train.fsdp=true`` every decoder layer is an FSDP unit of its own (transformers'
        ``_no_split_modules``, found inside the peft wrapper with LoRA): a forward gathers one layer at a time."""
        from tunesmith.models.hf.blocks import no_split_blocks

        return no_split_blocks(model)

    def max_tokens(self) -> int:
        return int(self.cfg.dataset.max_tokens or self.checkpoint.config.get("max_position_embeddings") or 0)

    def build_datasets(self) -> dict[str, Dataset]:
        d = self.cfg.dataset

        def prompts(split: str) -> SpeechPrompts:
            return SpeechPrompts(
                self.splits[split],
                self.builder,
                reference=d.reference,
                reference_probability=d.reference_probability,
                max_tokens=self.max_tokens(),
                split=split,
            )

        out: dict[str, Dataset] = {"train": prompts("train")}
        if "valid" in self.splits and len(self.splits["valid"]):
            out["valid"] = prompts("valid")
        return out

    # ------------------------------------------------------------------ per micro-batch

    def collate(self, items: list[SpeechItem]) -> dict[str, Any]:
        return collate_prompts(self.builder, items)

    def count_targets(self, batch: dict[str, Any]) -> int:
        from tunesmith.models.higgs.prompt import IGNORE

        return int((batch["audio_labels"] != IGNORE).sum())

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> LossOutput:
        from tunesmith.models.higgs.loss import higgs_loss

        out = higgs_loss(model, batch, text_loss=self.cfg.text_loss)
        loss_sum = out.audio_sum
        k = int(out.audio_per_codebook.shape[0])
        # every codebook has the same number of targets: sum × K / (all audio targets) = that codebook's mean CE
        metrics: dict[str, Any] = {f"ce_q{i}": out.audio_per_codebook[i] * k for i in range(k)}
        if self.cfg.text_loss and out.text_sum is not None:
            loss_sum = loss_sum + self.cfg.text_loss_weight * out.text_sum
            metrics["audio_ce"] = out.audio_sum.detach()
            metrics["text_ce"] = out.text_sum.detach()
            metrics["text_ce/count"] = float(out.text_tokens)
        return LossOutput(loss_sum, metrics)

    def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Perplexity of the audio tokens (``ppl``) from the mean audio cross-entropy."""
        value = metrics.get("audio_ce", metrics.get("loss"))
        if value is not None:
            metrics["ppl"] = math.exp(min(value, 50.0)) if math.isfinite(value) else float("nan")
        return metrics

    # ------------------------------------------------------------------ records

    def checkpoint_meta(self) -> dict:
        return {"family": FAMILY, "source": str(Path(self.hf_init).resolve())}

    def data_fingerprint(self) -> dict | None:
        """The prepared dataset's manifests and the token cache key (dataset × audio tokenizer weights)."""
        from tunesmith.data.prepare.fingerprint import token_cache_fingerprint

        return token_cache_fingerprint(self.cfg.data, self.splits.get("train"))

    def after_checkpoint(self) -> None:
        """With LoRA, RUN/adapter: peft's adapter folder of the best (else last) checkpoint's weights."""
        if self.cfg.finetune.mode == "lora":
            from tunesmith.artifacts import checkpoint as ckpt
            from tunesmith.models.higgs.model import save_adapter

            checkpoints = self.run.checkpoints_dir
            folder = next(
                (checkpoints / n for n in ("best", "last") if (checkpoints / n / ckpt.MANIFEST).is_file()), None
            )
            if folder is not None:
                state = ckpt.load_weights(folder, "model")  # EMA weights when the run keeps them
                save_adapter(self.model, state, self.run.dir / ADAPTER_DIR, base=self.hf_init, checkpoint=folder)

    # ------------------------------------------------------------------ samples

    def sample_texts(self) -> list[str]:
        """The generate stage's texts: configured ones, else distinct transcripts from valid, then train."""
        g = self.cfg.generate
        if g.texts:
            return list(g.texts[: g.num_samples])
        texts: list[str] = []
        for split in ("valid", "train"):
            dataset = self.datasets.get(split)
            for index in getattr(dataset, "indices", [])[: 50 * g.num_samples]:
                text = dataset.texts[index]
                if text not in texts:
                    texts.append(text)
                if len(texts) == g.num_samples:
                    return texts
        return texts

    def generate(self, model: nn.Module, epoch: int) -> None:
        """Greedy samples of fixed texts (one prompt at a time) → RUN/samples/epoch_NNNN/NN.wav + samples.json."""
        from tunesmith.audio.io import save_audio
        from tunesmith.fileio import atomic_write_text
        from tunesmith.models.higgs.generation import frames_to_codes, greedy_audio_frames
        from tunesmith.models.higgs.loss import unwrap
        from tunesmith.models.higgs.prompt import SpeechExample

        g = self.cfg.generate
        if g.num_samples <= 0 or not self.dist.is_main or self.sharded:
            return
        max_frames = max(1, round(g.max_seconds * float(self.codec.frame_rate)))
        inner = unwrap(model)  # transformers' model; LoRA layers (injected in place) stay active
        tokens = self.checkpoint.tokens
        out = self.run.samples_dir / f"epoch_{epoch:04d}"
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, text in enumerate(self.sample_texts()):
            batch = self.builder.collate([self.builder.encode(SpeechExample(text))])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            frames = greedy_audio_frames(inner, batch, max_frames)[0].cpu()
            codes = frames_to_codes(frames, tokens.stream_bos_id, tokens.stream_eos_id)
            name = f"{i:02d}.wav" if codes.shape[1] else None  # None: the model ended before any audio frame
            if name is not None:
                wav = self.codec.decode(codes[None].to(self.device)).float().cpu().numpy()[0]  # [1, T]
                save_audio(out / name, wav, int(self.codec.sample_rate))
            entries.append({"file": name, "text": text, "frames": int(codes.shape[1]), "decoding": "greedy"})
        atomic_write_text(out / "samples.json", json.dumps({"epoch": epoch, "samples": entries}, indent=2) + "\n")
        log.info("wrote %d samples to %s", len(entries), out)
