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
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from tunesmith.config import OptimConfig, TrainConfig
from tunesmith.engine.solver import LossOutput, Solver
from tunesmith.errors import UserError
from tunesmith.models.hf.finetune import FinetuneConfig
from tunesmith.models.lm.conditioners import ConditionerConfig, build_vocabularies, drop_conditions
from tunesmith.models.lm.model import LMConfig, LMModel
from tunesmith.runtime import progress_enabled

log = logging.getLogger("tunesmith.lm")

CONDITION_FIELDS = ("description", "transcript", "genre", "bpm", "key", "instrument", "moods", "keywords", "title")


@dataclasses.dataclass
class LMDatasetConfig:
    batch_size: int = 16
    segment_seconds: float = 10.0  # crop length; shorter items are used whole (padding is masked)
    num_workers: int = 0


@dataclasses.dataclass
class LMGenerateConfig:
    """Samples written by the generate stage (never part of a run's signature)."""

    num_samples: int = 3  # 0 = no samples
    prompts: list[str] = dataclasses.field(default_factory=list)  # empty = texts from the valid split
    duration: float = 5.0  # seconds
    cfg: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    seed: int = 0


@dataclasses.dataclass
class LMTaskConfig:
    data: str = ""  # prepared dataset folder (tunesmith prepare)
    codec: str = ""  # codec run, checkpoint or model dir
    codec_bandwidth: float = 0.0  # kbps; 0 = all the codec's codebooks
    init_from: str = ""  # start from these weights (run/checkpoint/model dir, or hf:DIR), e.g. a previous stage
    dataset: LMDatasetConfig = dataclasses.field(default_factory=LMDatasetConfig)
    model: LMConfig = dataclasses.field(default_factory=LMConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    generate: LMGenerateConfig = dataclasses.field(default_factory=LMGenerateConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)  # full or LoRA (models/hf)


# --------------------------------------------------------------------------- data


def open_token_cache(data: str, codec: Any, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Token shards per split for (dataset, codec object); encodes what is not cached yet first."""
    from tunesmith.data.token_cache import TokenShards, ensure_token_cache
    from tunesmith.models.codec import codec_fingerprint

    cache_dir = ensure_token_cache(data, codec, progress=progress, device=device)
    fingerprint = codec_fingerprint(codec)
    splits = {}
    for split in ("train", "valid"):
        try:
            splits[split] = TokenShards(cache_dir, split, fingerprint)
        except UserError as err:
            if split == "train":
                raise
            log.info("no valid split in the token cache (%s)", err)
    return splits


def condition_of(info: dict, cfg: ConditionerConfig) -> dict:
    """The condition dict of a segment: its text field and configured attributes (plain values)."""
    keep = {cfg.text_field, *cfg.attributes}
    return {k: v for k, v in info.items() if k in keep and v not in (None, "", [])}


class TokenCrops(Dataset):
    """Keyed by (index, seed): a crop of ``num_frames`` frames (Long[K, n]) and its condition."""

    def __init__(
        self, shards: Any, num_frames: int, num_codebooks: int, cond_cfg: ConditionerConfig, training: bool
    ) -> None:
        self.shards = shards
        self.num_frames = num_frames
        self.num_codebooks = num_codebooks
        self.cond_cfg = cond_cfg
        self.training = training
        self._conditions: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.shards)

    def condition(self, index: int) -> dict:
        if index not in self._conditions:
            self._conditions[index] = condition_of(self.shards.info(index) or {}, self.cond_cfg)
        return self._conditions[index]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        gen = torch.Generator().manual_seed(int(seed))
        codes, _ = self.shards.crop(index, self.num_frames, gen)  # [K, n]; a short segment comes whole
        codes = np.asarray(codes[: self.num_codebooks])
        if codes.shape[0] < self.num_codebooks:
            raise UserError(
                f"token cache item {index} has {codes.shape[0]} codebooks, the LM needs {self.num_codebooks}"
            )
        condition = drop_conditions(self.condition(index), self.cond_cfg, gen, training=self.training)
        return {"codes": torch.from_numpy(codes.astype(np.int64)), "condition": condition}


def collate_crops(items: list[dict]) -> dict[str, Any]:
    """Pad crops to the longest: codes Long[B, K, F] (zeros past each length), lengths Long[B], conditions."""
    longest = max(it["codes"].shape[1] for it in items)
    k = items[0]["codes"].shape[0]
    codes = torch.zeros(len(items), k, longest, dtype=torch.long)
    for i, it in enumerate(items):
        codes[i, :, : it["codes"].shape[1]] = it["codes"]
    lengths = torch.tensor([it["codes"].shape[1] for it in items], dtype=torch.long)
    return {"codes": codes, "lengths": lengths, "conditions": [it["condition"] for it in items]}


# --------------------------------------------------------------------------- solver


class LMSolver(Solver):
    task = "lm"
    config_class = LMTaskConfig
    best_metric = "loss"
    best_mode = "min"

    def _prepare(self) -> None:
        """Codec, token cache and LM shape, once (build_model runs before build_datasets)."""
        if getattr(self, "_prepared", False):
            return
        self._open_init_source()
        cfg = self.cfg
        if not cfg.data:
            raise UserError("data= is required: a prepared dataset folder (tunesmith prepare ... --out DIR)")
        if not cfg.codec:
            raise UserError("codec= is required: the codec run or model dir whose tokens the LM models")
        from tunesmith.models.codec import load_codec

        bandwidth = cfg.codec_bandwidth or None
        self.codec = load_codec(cfg.codec, bandwidth=bandwidth, device=self.device)
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
        self._prepared = True

    def _open_init_source(self) -> None:
        """init_from a MusicGen (hf:DIR, or an imported model dir): its architecture and codec become the run's."""
        from tunesmith.engine.distributed import main_rank_first
        from tunesmith.models.hf.finetune import open_init_source

        self.init_source = None
        if not self.cfg.init_from:
            return
        shared = self.run.dir.parent.parent / ".hf_imports"  # one import per source, hard-linked into each run
        self.init_source = main_rank_first(  # one rank imports a transformers directory; the others reuse it
            self.dist.is_main, lambda: open_init_source(self.cfg.init_from, self.run.dir, shared)
        )
        if self.init_source is not None:
            self.resolved = self.init_source.apply_to(self.resolved)  # checkpoints record the real model
            self.cfg = self.resolved.config

    def _vocabularies(self) -> dict[str, Any]:
        cond = self.lm_config.conditioner
        if not cond.enabled:
            return {}
        if self.init_source is not None:
            from tunesmith.models.lm.conditioners import vocabularies_from_state

            return vocabularies_from_state(self.init_source.state, cond, "conditioner.")
        if self.cfg.init_from:  # the source's vocabularies, so its embeddings stay aligned
            from tunesmith.artifacts import checkpoint as ckpt
            from tunesmith.models.lm.conditioners import vocabularies_from_state

            weights = ckpt.load_weights(ckpt.find_checkpoint(self.cfg.init_from), "model")
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

        self._prepare()
        try:
            model = LMModel(self.lm_config, self._vocabularies())
        except ValueError as err:
            raise UserError(f"model: {err}") from err
        if self.cfg.finetune.mode == "lora" and self.cfg.init_from and self.init_source is None:
            self.model = model
            super().load_init_weights(self.cfg.init_from)  # before LoRA wraps the layers
        return prepare_model(model, self.cfg.finetune, self.init_source)  # source weights, LoRA, checkpointing

    def load_init_weights(self, source: str) -> None:
        if self.init_source is None and self.cfg.finetune.mode != "lora":  # else build_model loaded them
            super().load_init_weights(source)

    def save_checkpoints(self, improved: bool) -> None:
        super().save_checkpoints(improved)
        if self.cfg.finetune.mode == "lora" and self.dist.is_main:  # RUN/adapter: the adapters on their own
            from tunesmith.models.hf.finetune import write_run_adapter

            base = str(self.init_source.folder) if self.init_source is not None else (self.cfg.init_from or None)
            write_run_adapter(self.run.dir, self.resolved.data, self.cfg.finetune, base)

    def build_datasets(self) -> dict[str, Dataset]:
        self._prepare()
        k, cond = self.lm_config.num_codebooks, self.lm_config.conditioner
        out: dict[str, Dataset] = {"train": TokenCrops(self.splits["train"], self.num_frames, k, cond, training=True)}
        if "valid" in self.splits and len(self.splits["valid"]):
            out["valid"] = TokenCrops(self.splits["valid"], self.num_frames, k, cond, training=False)
        return out

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

    def preflight(self) -> list[str]:
        problems = []
        d = self.cfg.dataset
        if d.segment_seconds <= 0:
            problems.append(f"dataset.segment_seconds={d.segment_seconds}: must be positive")
        if self.cfg.generate.num_samples and self.cfg.generate.duration <= 0:
            problems.append(f"generate.duration={self.cfg.generate.duration}: must be positive")
        return problems

    @staticmethod
    def _add_perplexity(metrics: dict[str, float]) -> dict[str, float]:
        for key in [k for k in metrics if k == "loss" or k.startswith("ce_q")]:
            value = metrics[key]
            name = "ppl" if key == "loss" else "ppl_q" + key[4:]
            metrics[name] = math.exp(min(value, 50.0)) if math.isfinite(value) else float("nan")
        return metrics

    def train_epoch(self) -> dict[str, float]:
        return self._add_perplexity(super().train_epoch())

    def valid_epoch(self) -> dict[str, float]:
        return self._add_perplexity(super().valid_epoch())

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
        from tunesmith.audio.io import save_audio, write_atomic_text
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
        write_atomic_text(out / "samples.json", json.dumps({"epoch": epoch, "samples": entries}, indent=2) + "\n")
        log.info("wrote %d samples to %s", len(entries), out)
