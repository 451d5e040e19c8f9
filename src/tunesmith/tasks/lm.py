"""The LM task: train a MusicGen-style LM on a dataset's cached codec tokens.

``tunesmith train lm PRESET data=DIR codec=RUN_OR_MODEL``: the token cache for (dataset, codec)
is read, or built first when missing; each training item is a random crop in token space with
its sidecar's text/attributes as condition (CFG and attribute dropout drawn per sample from the
item's seed). Valid reports CE and perplexity overall and per codebook; the generate stage writes
a few samples under ``RUN/samples/epoch_NNNN/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from tunesmith.config import SEED_MAX, OptimConfig, Range, Resolved, TrainConfig, ranged
from tunesmith.data.datasets.tokens import CONDITION_FIELDS, TokenCrops, collate_crops, condition_of, open_token_cache
from tunesmith.engine.solver import LossOutput, Solver
from tunesmith.engine.state import load_init_weights
from tunesmith.errors import UserError
from tunesmith.models.hf.finetune import FinetuneConfig
from tunesmith.models.lm.conditioners import build_vocabularies
from tunesmith.models.lm.model import LMConfig, LMModel
from tunesmith.runtime import progress_enabled
from tunesmith.tasks.lm_evaluate import EvaluateStage, LMEvaluateConfig, evaluate_problems

log = logging.getLogger("tunesmith.lm")

__all__ = ["CONDITION_FIELDS", "LMSolver", "LMTaskConfig", "TokenCrops", "collate_crops", "open_token_cache"]


@dataclasses.dataclass
class LMDatasetConfig:
    batch_size: int = ranged(16, ge=1)
    segment_seconds: float = ranged(10.0, gt=0)  # crop length; shorter items are used whole (padding is masked)
    num_workers: int = ranged(0, ge=0)


@dataclasses.dataclass
class LMGenerateConfig:
    """Samples written by the generate stage (never part of a run's signature)."""

    num_samples: int = ranged(3, ge=0)  # 0 = no samples
    prompts: list[str] = dataclasses.field(default_factory=list)  # empty = texts from the valid split
    duration: float = ranged(5.0, gt=0, le=3600)  # seconds
    cfg: float = ranged(3.0, ge=0)
    temperature: float = ranged(1.0, ge=0)
    top_k: int = ranged(250, ge=0)
    top_p: float = ranged(0.0, ge=0, le=1)
    seed: int = ranged(0, ge=0, le=SEED_MAX)


@dataclasses.dataclass
class LMTaskConfig:
    data: str = ""  # prepared dataset folder (tunesmith prepare)
    codec: str = ""  # codec run, checkpoint or model dir
    codec_bandwidth: float = ranged(0.0, ge=0)  # kbps; 0 = all the codec's codebooks
    init_from: str = ""  # start from these weights (run/checkpoint/model dir, or hf:DIR), e.g. a previous stage
    dataset: LMDatasetConfig = dataclasses.field(default_factory=LMDatasetConfig)
    model: LMConfig = dataclasses.field(default_factory=LMConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    generate: LMGenerateConfig = dataclasses.field(default_factory=LMGenerateConfig)
    evaluate: LMEvaluateConfig = dataclasses.field(default_factory=LMEvaluateConfig)  # generation metrics
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)  # full or LoRA (models/hf)

    value_ranges: ClassVar[dict[str, Range]] = {  # the model section is defined in models.lm
        "model.card": Range(ge=0),
        "model.num_codebooks": Range(ge=0),
        "model.init_std": Range(gt=0),
        "model.transformer.dim": Range(ge=1),
        "model.transformer.num_layers": Range(ge=1),
        "model.transformer.num_heads": Range(ge=1),
        "model.transformer.ffn_dim": Range(ge=0),
        "model.transformer.dropout": Range(ge=0, lt=1),
        "model.transformer.max_seq_len": Range(ge=1),
        "model.transformer.position_offset": Range(ge=0),
        "model.transformer.max_period": Range(gt=0),
        "model.transformer.cross_dim": Range(ge=0),
        "model.transformer.norm_eps": Range(gt=0),
        "model.conditioner.vocab_size": Range(ge=1),
        "model.conditioner.text_max_len": Range(ge=1),
        "model.conditioner.text_dim": Range(ge=0),
        "model.conditioner.text_layers": Range(ge=0),
        "model.conditioner.text_heads": Range(ge=1),
        "model.conditioner.attribute_vocab_size": Range(ge=1),
        "model.conditioner.attribute_max_tokens": Range(ge=1),
        "model.conditioner.cfg_dropout": Range(ge=0, le=1),
        "model.conditioner.attribute_dropout": Range(ge=0, le=1),
    }


# --------------------------------------------------------------------------- solver


class LMSolver(Solver):
    task = "lm"
    config_class = LMTaskConfig
    best_metric = "loss"
    best_mode = "min"
    target_unit = "tokens"  # audio codes: frames × codebooks

    def prepare(self) -> Resolved | None:
        """Open the init source, the codec and its token cache, and fix the LM's shape from the codec.

        An imported MusicGen (``init_from=hf:DIR`` or an imported model dir) brings its architecture and
        codec: the returned config records them, so checkpoints describe the real model.
        """
        resolved = self._open_init_source()
        cfg = (resolved or self.resolved).config
        if not cfg.data:
            raise UserError("data= is required: a prepared dataset folder (tunesmith prepare ... --out DIR)")
        if not cfg.codec:
            raise UserError("codec= is required: the codec run or model dir whose tokens the LM models")
        from tunesmith.models.codec import load_codec

        bandwidth = cfg.codec_bandwidth or None
        from tunesmith.models.codec.stereo import as_channels

        # model.channels=2: a mono codec runs per channel, codebooks interleaved (stereo MusicGen's layout)
        self.codec = as_channels(load_codec(cfg.codec, bandwidth=bandwidth, device=self.device), cfg.model.channels)
        m = cfg.model
        k = m.num_codebooks or int(self.codec.n_q)
        if m.card and m.card != int(self.codec.bins):
            raise UserError(
                f"model.card={m.card} but the codec has {self.codec.bins} bins per codebook; "
                "leave model.card=0 to take it from the codec"
            )
        if k > int(self.codec.n_q):
            raise UserError(
                f"model.num_codebooks={k} but the codec gives {self.codec.n_q} at this bandwidth; "
                "lower model.num_codebooks or raise codec_bandwidth"
            )
        self.lm_config = dataclasses.replace(m, card=int(self.codec.bins), num_codebooks=k)
        self.frame_rate = float(self.codec.frame_rate)
        self.num_frames = max(1, round(cfg.dataset.segment_seconds * self.frame_rate))
        log.info("reading the token cache of %s for codec %s (building it first if missing)", cfg.data, cfg.codec)
        from tunesmith.engine.distributed import main_rank_first

        progress = progress_enabled(cfg.train.log.progress) and self.dist.is_main
        self.splits = main_rank_first(  # one rank encodes; the others open the finished cache
            self.dist.is_main, lambda: open_token_cache(cfg.data, self.codec, str(self.device), progress=progress)
        )
        return resolved

    def _open_init_source(self) -> Resolved | None:
        """init_from a MusicGen (hf:DIR, or an imported model dir): its architecture and codec become the run's."""
        from tunesmith.engine.distributed import main_rank_first
        from tunesmith.models.hf.finetune import open_init_source

        self.init_source = None
        if not self.cfg.init_from:
            return None
        shared = self.run.dir.parent.parent / ".hf_imports"  # one import per source, hard-linked into each run
        self.init_source = main_rank_first(  # one rank imports a transformers directory; the others reuse it
            self.dist.is_main, lambda: open_init_source(self.cfg.init_from, self.run.dir, shared)
        )
        if self.init_source is None:
            return None
        return self.init_source.apply_to(self.resolved)  # checkpoints record the real model

    def _vocabularies(self) -> dict[str, Any]:
        cond = self.lm_config.conditioner
        if not cond.enabled:
            return {}
        if self.init_source is not None:
            from tunesmith.models.lm.conditioners import vocabularies_from_state

            return vocabularies_from_state(self.init_source.state, cond, "conditioner.")
        if self.cfg.init_from:  # the source's vocabularies, so its embeddings stay aligned
            from tunesmith.models.lm.conditioners import vocabularies_from_state
            from tunesmith.models.lm.loading import read_lm_checkpoint

            weights = read_lm_checkpoint(self.cfg.init_from, merge_lora=False).weights  # also checks it is an LM
            return vocabularies_from_state(weights, cond, "conditioner.")
        train = self.splits["train"]
        conditions = [condition_of(train.info(i) or {}, cond) for i in range(len(train))]
        missing = sum(not c.get(cond.text_field) for c in conditions) if cond.text != "none" else 0
        if cond.text != "none" and missing == len(conditions):
            raise UserError(
                f"no training segment has a {cond.text_field!r} in its sidecar; set model.conditioner.text=none "
                "for an unconditional LM, or model.conditioner.text_field to a field the sidecars have"
            )
        if missing:
            log.warning(
                "%d of %d training segments have no %r (trained as unconditional)",
                missing,
                len(conditions),
                cond.text_field,
            )
        return build_vocabularies(conditions, cond)

    def build_model(self) -> nn.Module:
        from tunesmith.models.hf.finetune import prepare_model

        try:
            model = LMModel(self.lm_config, self._vocabularies())
        except ValueError as err:
            raise UserError(f"model: {err}") from err
        if self.cfg.finetune.mode == "lora" and self.cfg.init_from and self.init_source is None:
            load_init_weights(model, self.cfg.init_from)  # before LoRA wraps the layers
        return prepare_model(model, self.cfg.finetune, self.init_source)  # source weights, LoRA, checkpointing

    def init_weights_from(self) -> str:
        """None for the engine to load when build_model started from them (an imported model, LoRA)."""
        if self.init_source is not None or self.cfg.finetune.mode == "lora":
            return ""
        return self.cfg.init_from

    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        """Under ``train.fsdp=true`` every layer of the LM's transformer is an FSDP unit of its own (LoRA adapters
        are injected inside the layers, so a LoRA model has the same units). The transformer calls a layer's
        cross-attention key/value projection outside the layer's forward (once per sequence, cached while
        decoding), so that projection is a unit of its own too, inside its layer's."""
        layers = list(model.transformer.layers)
        kv = [layer.cross_attn.kv for layer in layers if getattr(layer, "cross_attn", None) is not None]
        return kv + layers

    def after_checkpoint(self) -> None:
        """With LoRA, RUN/adapter: the adapters on their own, next to the checkpoints."""
        if self.cfg.finetune.mode == "lora":
            from tunesmith.models.hf.finetune import write_run_adapter

            base = str(self.init_source.folder) if self.init_source is not None else (self.cfg.init_from or None)
            write_run_adapter(self.run.dir, self.resolved.data, self.cfg.finetune, base)

    def build_datasets(self) -> dict[str, Dataset]:
        k, cond = self.lm_config.num_codebooks, self.lm_config.conditioner
        chroma = self._chroma_tracks() if cond.chroma else {}

        def crops(split: str, training: bool) -> TokenCrops:
            track = chroma.get(split)
            return TokenCrops(self.splits[split], self.num_frames, k, cond, training, track, self.frame_rate)

        out: dict[str, Dataset] = {"train": crops("train", True)}
        if "valid" in self.splits and len(self.splits["valid"]):
            out["valid"] = crops("valid", False)
        return out

    def _chroma_tracks(self) -> dict[str, Any]:
        """Melody LMs: each split's chroma, computed once next to its tokens (main rank first)."""
        from tunesmith.data.token_cache.chroma import ensure_chroma
        from tunesmith.engine.distributed import main_rank_first
        from tunesmith.models.lm.conditioners import chroma_settings

        settings = chroma_settings(self.lm_config.conditioner)
        return main_rank_first(
            self.dist.is_main,
            lambda: {name: ensure_chroma(shards, self.cfg.data, settings) for name, shards in self.splits.items()},
        )

    def collate(self, items: list) -> dict[str, Any]:
        return collate_crops(items)

    def count_targets(self, batch: dict[str, Any]) -> int:
        return int(batch["lengths"].sum()) * int(batch["codes"].shape[1])

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> LossOutput:
        loss_sum, per_codebook, _ = model(
            batch["codes"], batch["conditions"], lengths=batch["lengths"], return_loss=True
        )
        k = per_codebook.shape[0]
        # every codebook has the same number of targets, so sum × K / (all targets) = that codebook's mean CE
        metrics = {f"ce_q{i}": per_codebook[i] * k for i in range(k)}
        return LossOutput(loss_sum, metrics)

    def flops_per_target(self) -> float | None:
        model = self.model
        steps = model.pattern.num_steps(self.num_frames)
        return model.flops_per_token(steps, cond_len=8) / model.num_codebooks

    def data_fingerprint(self) -> dict | None:
        """The prepared dataset's manifests and the token cache key (dataset × codec weights)."""
        from tunesmith.data.prepare.fingerprint import token_cache_fingerprint

        return token_cache_fingerprint(self.cfg.data, self.splits.get("train"))

    def preflight(self) -> list[str]:
        problems = []
        d = self.cfg.dataset
        if d.segment_seconds <= 0:
            problems.append(f"dataset.segment_seconds={d.segment_seconds}: must be positive")
        if self.cfg.generate.num_samples and self.cfg.generate.duration <= 0:
            problems.append(f"generate.duration={self.cfg.generate.duration}: must be positive")
        if self.sharded and self.cfg.evaluate.metrics:
            problems.append(
                f"evaluate.metrics={list(self.cfg.evaluate.metrics)} with train.fsdp=true: the evaluate stage "
                "generates on the main rank only, which a model sharded over the ranks cannot do; set "
                "evaluate.metrics=[] and evaluate the run's checkpoints afterwards (tunesmith eval), or train "
                "without train.fsdp"
            )
        return problems + evaluate_problems(self.cfg.evaluate)

    def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Perplexity overall (``ppl``) and per codebook (``ppl_qK``) from the mean cross-entropies."""
        for key in [k for k in metrics if k == "loss" or k.startswith("ce_q")]:
            value = metrics[key]
            name = "ppl" if key == "loss" else "ppl_q" + key[4:]
            metrics[name] = math.exp(min(value, 50.0)) if math.isfinite(value) else float("nan")
        return metrics

    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """The evaluate stage's generation metrics on a fixed subset (tasks.lm_evaluate); {} when none are set."""
        if not self.cfg.evaluate.metrics:
            return {}
        if not hasattr(self, "_evaluate_stage"):
            self._evaluate_stage = EvaluateStage(self)
        return self._evaluate_stage(model, epoch)

    # ------------------------------------------------------------------ samples

    def sample_prompts(self) -> list[dict]:
        """The generate stage's conditions: configured prompts, else distinct ones from valid, then train."""
        g, cond = self.cfg.generate, self.lm_config.conditioner
        if g.prompts:
            return [{cond.text_field: p} for p in g.prompts[: g.num_samples]]
        prompts: list[dict] = []
        for split in ("valid", "train"):
            source = self.splits.get(split)
            for i in range(min(len(source), 50 * g.num_samples) if source is not None else 0):
                c = condition_of(source.info(i) or {}, cond)
                if c and c not in prompts:
                    prompts.append(c)
                if len(prompts) == g.num_samples:
                    return prompts
        return (prompts * g.num_samples)[: g.num_samples] if prompts else [{}] * g.num_samples

    def generate(self, model: nn.Module, epoch: int) -> None:
        from tunesmith.audio.io import save_audio
        from tunesmith.fileio import atomic_write_text
        from tunesmith.models.lm.generation import generate_codes

        g = self.cfg.generate
        if g.num_samples <= 0:
            return
        conditions = self.sample_prompts()
        num_frames = max(1, round(g.duration * self.frame_rate))
        codes = generate_codes(
            model,
            conditions if model.conditioner is not None else None,
            num_frames,
            cfg_coef=g.cfg,
            temperature=g.temperature,
            top_k=g.top_k,
            top_p=g.top_p,
            generator=[torch.Generator().manual_seed(g.seed + i) for i in range(len(conditions))],
            batch_size=len(conditions),
        )
        wav = self.codec.decode(codes).float().cpu().numpy()
        out = self.run.samples_dir / f"epoch_{epoch:04d}"
        entries = []
        for i, (c, w) in enumerate(zip(conditions, wav, strict=True)):
            name = f"{i:02d}.wav"
            save_audio(out / name, w, int(self.codec.sample_rate))
            entries.append({"file": name, "condition": c, "seed": g.seed + i, "duration": g.duration, "cfg": g.cfg})
        atomic_write_text(out / "samples.json", json.dumps({"epoch": epoch, "samples": entries}, indent=2) + "\n")
        log.info("wrote %d samples to %s", len(entries), out)
