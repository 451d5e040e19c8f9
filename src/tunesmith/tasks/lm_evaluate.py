"""The LM task's evaluate stage: generation metrics (FAD, CLAP score, KLD, chroma, WER/CER) on a fixed subset.

Every ``train.evaluate_every`` epochs (0 = at the end only) the stage generates one sample per chosen
valid segment (train when there is no valid split), from that segment's own condition with seed
``evaluate.seed + i``, and measures the samples with tunesmith.eval.suite against the segments' audio.
The segments are the same every time (even over the split), so the numbers of different epochs compare.
A melody-conditioned LM is given each segment's own melody (its chroma), so ``chroma`` measures how well the
samples follow the melody they were asked to follow.
The scalars (``fad``, ``fad_inf``, ``clap``, ``kld``, ``chroma``, ``wer``, ``cer``) go to the run's history,
TensorBoard and wandb as the ``evaluate`` stage; the whole report to ``RUN/evaluate/epoch_NNNN.json``.
``train.best_metric=fad`` picks the ``best`` checkpoint by one of them (direction known per metric).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import SEED_MAX, ranged
from tunesmith.eval.embed import AudioClip

log = logging.getLogger("tunesmith.lm")


@dataclasses.dataclass
class LMEvaluateConfig:
    """Generation metrics of the evaluate stage (never part of a run's signature)."""

    metrics: list[str] = dataclasses.field(default_factory=list)  # fad, clap, kld, chroma, wer; empty = off
    num_samples: int = ranged(8, ge=1)  # fixed valid segments, one sample each
    duration: float = ranged(0.0, ge=0, le=3600)  # seconds per sample; 0 = generate.duration
    seed: int = ranged(0, ge=0, le=SEED_MAX)
    batch_size: int = ranged(8, ge=1)  # samples generated together
    embedder_dir: str = ""  # FAD: an audio encoder dir (CLAP/AST/wav2vec2/HuBERT/Whisper) or a codec; "" = run's codec
    clap_dir: str = ""  # CLAP score: a transformers ClapModel dir
    classifier_dir: str = ""  # KLD: an audio classifier dir (e.g. AST fine-tuned on AudioSet)
    whisper_dir: str = ""  # WER/CER: a transformers Whisper dir


def evaluate_problems(cfg: LMEvaluateConfig) -> list[str]:
    """Unknown metric names and model dirs that do not hold the kind of model their metric needs."""
    from tunesmith.errors import UserError
    from tunesmith.eval.suite import parse_metrics

    if not cfg.metrics:
        return []
    try:
        metrics = parse_metrics(cfg.metrics)
    except UserError as err:
        return [f"evaluate.metrics: {err}"]
    from tunesmith.eval.embed import ENCODER_TYPES
    from tunesmith.eval.kld import CLASSIFIER_TYPES
    from tunesmith.eval.modeldirs import read_hf_config, require_model_type

    problems = []
    checks = {"clap": (cfg.clap_dir, ("clap",)), "kld": (cfg.classifier_dir, CLASSIFIER_TYPES)}
    checks["wer"] = (cfg.whisper_dir, ("whisper",))
    if cfg.embedder_dir and read_hf_config(cfg.embedder_dir) is not None:  # else a codec, checked when loaded
        checks["fad"] = (cfg.embedder_dir, ENCODER_TYPES)
    for metric, (folder, kinds) in checks.items():
        if metric in metrics and folder:
            try:
                require_model_type(folder, metric, kinds)
            except UserError as err:
                problems.append(f"evaluate.{metric}: {err}")
    return problems


class EvaluateStage:
    """Chooses the fixed subset once, keeps the metric models loaded between epochs, runs the metrics."""

    def __init__(self, solver: Any) -> None:
        self.solver = solver
        self.references: list[AudioClip] | None = None
        self.items: list[Any] = []
        self.identity: dict[str, Any] = {}
        self.loaded: dict[str, Any] = {}

    @property
    def cfg(self) -> LMEvaluateConfig:
        return self.solver.cfg.evaluate

    def duration(self) -> float:
        return float(self.cfg.duration or self.solver.cfg.generate.duration)

    def _choose(self) -> None:
        from tunesmith.data.manifest import manifest_path
        from tunesmith.eval.reference import choose_reference, load_clip

        data = self.solver.cfg.data
        valid = manifest_path(data, "valid")
        split = "valid" if valid.is_file() and valid.stat().st_size > 0 else "train"  # an empty valid split: train
        self.items, self.identity = choose_reference(Path(data), split, self.cfg.num_samples)
        self.identity["seconds"] = self.duration()
        self.references = [load_clip(r.path, f"ref{r.index:05d}", self.duration(), r) for r in self.items]
        log.info("evaluate stage: %d %s segments of %s, metrics %s", len(self.items), split, data, self.cfg.metrics)

    def generate(self, model: Any) -> list[AudioClip]:
        """One sample per chosen segment, from its condition, seed ``evaluate.seed + i`` → clips."""
        from tunesmith.data.datasets.tokens import condition_of
        from tunesmith.models.lm.generation import generate_codes

        g, codec = self.solver.cfg.generate, self.solver.codec
        cond = self.solver.lm_config.conditioner
        num_frames = max(1, round(self.duration() * float(codec.frame_rate)))
        clips: list[AudioClip] = []
        size = self.cfg.batch_size
        for start in range(0, len(self.items), size):
            chunk = self.items[start : start + size]
            conditions = [condition_of(r.info, cond) for r in chunk] if model.conditioner is not None else None
            if conditions is not None and cond.chroma:  # a melody LM follows its reference segment's melody
                clips_in = (self.references or [])[start : start + size]
                conditions = [{**c, "chroma": self._melody(clip)} for c, clip in zip(conditions, clips_in, strict=True)]
            codes = generate_codes(
                model,
                conditions,
                num_frames,
                cfg_coef=g.cfg,
                temperature=g.temperature,
                top_k=g.top_k,
                top_p=g.top_p,
                generator=[torch.Generator().manual_seed(self.cfg.seed + start + i) for i in range(len(chunk))],
                batch_size=len(chunk),
            )
            wav = codec.decode(codes).float().cpu().numpy()
            for i, (r, w) in enumerate(zip(chunk, wav, strict=True)):
                clips.append(AudioClip(f"gen{start + i:03d}", w, int(codec.sample_rate), r.description, r.transcript))
        return clips

    def _melody(self, clip: AudioClip) -> torch.Tensor:
        """A reference clip's one-hot chroma [frames, bins], with the LM's own analysis settings."""
        from tunesmith.audio.chroma import waveform_chroma
        from tunesmith.models.lm.conditioners import chroma_settings

        return waveform_chroma(clip.wav, clip.sample_rate, chroma_settings(self.solver.lm_config.conditioner))

    def __call__(self, model: Any, epoch: int) -> dict[str, float]:
        from tunesmith.eval.suite import MetricModels, evaluate_clips
        from tunesmith.fileio import atomic_write_json

        if not self.cfg.metrics or not self.solver.dist.is_main:
            return {}
        if self.references is None:
            self._choose()
        c = self.cfg
        models = MetricModels(c.embedder_dir, c.clap_dir, c.classifier_dir, c.whisper_dir, str(self.solver.device))
        generated = self.generate(model)
        report = evaluate_clips(
            self.references or [],
            generated,
            c.metrics,
            models,
            codec=self.solver.codec,
            cache_dir=self.solver.run.dir.parent.parent / ".eval_cache",
            reference_id=self.identity,
            seed=c.seed,
            loaded=self.loaded,
        )
        report.model, report.reference = str(self.solver.run.dir), str(self.solver.cfg.data)
        report.num_samples, report.seed = len(generated), c.seed
        report.info = {"epoch": epoch, "duration": self.duration()}
        atomic_write_json(self.solver.run.dir / "evaluate" / f"epoch_{epoch:04d}.json", report.to_dict())
        return report.scalars()
