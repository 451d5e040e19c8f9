"""The generation metrics together: reference clips and the clips generated for them (paired by index,
generated from the reference's description) in, one :class:`EvalReport` out.

Used by ``tunesmith eval`` (tunesmith.inference.evaluate) and by the LM task's evaluate stage. A metric
that cannot run says why instead of failing the others: no model directory given (the reason says which
kind of model to put where), no descriptions or transcripts in the reference set. A directory holding
the wrong kind of model is a UserError.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError
from tunesmith.eval.embed import AudioClip, CodecLatentEmbedder, Embedder, load_embedder
from tunesmith.eval.modeldirs import where_to_put

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("fad", "clap", "kld", "chroma", "wer")
DEFAULT_METRICS: tuple[str, ...] = ("fad", "clap", "kld")
# direction of every scalar a report logs: "min" = lower is better
DIRECTIONS: dict[str, str] = {
    "fad": "min",
    "fad_inf": "min",
    "clap": "max",
    "kld": "min",
    "kld_qp": "min",
    "kld_both": "min",
    "chroma": "max",
    "wer": "min",
    "cer": "min",
}
PER_CLIP_FAD_MAX = 50  # per-clip FAD is reported for sets up to this many clips


def metric_direction(name: str) -> str | None:
    """ "min" or "max" for a known metric name (generation metrics, losses, perplexities), else None."""
    base = name.split("/")[-1]
    if base in DIRECTIONS:
        return DIRECTIONS[base]
    if base in ("loss", "ppl") or base.startswith(("ce_", "ppl_", "loss_", "mel", "l1", "mse")):
        return "min"
    if base in ("sisnr", "si_snr", "accuracy"):
        return "max"
    if base.endswith(("_mae", "_mse")) and not base.startswith("baseline_"):  # MIDI: velocity_mae, tf_velocity_mae
        return "min"
    if base.endswith(("_f1", "_corr", "_precision", "_recall")) and not base.startswith("baseline_"):  # note_f1
        return "max"
    return None


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    """``"fad,clap"`` or a list → metric names in :data:`METRICS` order; UserError for unknown names."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if not names:
        raise UserError(f"no metrics chosen; choose from {', '.join(METRICS)}")
    return [m for m in METRICS if m in names]


@dataclasses.dataclass
class MetricModels:
    """Where each metric's model lives (local folders; "" = not given) and how to run them."""

    embedder_dir: str = ""  # FAD: an audio encoder or a codec; "" = the evaluated model's own codec latents
    clap_dir: str = ""
    classifier_dir: str = ""
    whisper_dir: str = ""
    device: str = "cpu"
    batch_size: int = 8


@dataclasses.dataclass
class MetricResult:
    """One metric: its value(s) and the number of clips (and embeddings) it rests on, or why it was skipped."""

    name: str
    values: dict[str, float] = dataclasses.field(default_factory=dict)
    clips: int = 0
    model: str = ""
    skipped: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    per_clip: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EvalReport:
    """All metrics of one evaluation (what ``tunesmith eval`` prints and ``--json`` writes)."""

    results: list[MetricResult] = dataclasses.field(default_factory=list)
    model: str = ""
    reference: str = ""
    split: str = ""
    num_samples: int = 0
    seed: int = 0
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Every finite metric value, flat (``fad``, ``fad_inf``, ``clap``, ``kld``, ``chroma``, ``wer``, ``cer``)."""
        out: dict[str, float] = {}
        for r in self.results:
            out.update({k: float(v) for k, v in r.values.items() if v is not None and math.isfinite(v)})
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        """A plain-text table: metric, value, direction, clips, model, notes (skips say why)."""
        rows = [("metric", "value", "better", "N", "model", "notes")]
        for r in self.results:
            if r.skipped:
                rows.append((r.name, "skipped", "", "", r.model, r.skipped))
                continue
            notes = "; ".join(r.details.get("warnings", []))
            for key, value in r.values.items():
                better = {"min": "lower", "max": "higher"}.get(DIRECTIONS.get(key, ""), "")
                n = str(r.clips)
                if key == "fad" and "frames" in r.details:
                    n = f"{r.clips} clips / {r.details['frames']} frames"
                rows.append((key, f"{value:.4f}", better, n, r.model, notes if key == r.name else ""))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        head = f"{self.model} vs {self.reference}"
        if self.split:
            head += f" ({self.split}, {self.num_samples} samples, seed {self.seed})"
        return head + "\n" + "\n".join(lines)


# --------------------------------------------------------------------------- the metrics


def _fad(
    references: Sequence[AudioClip],
    generated: Sequence[AudioClip],
    embedder: Embedder,
    cache_dir: Path | None,
    reference_id: dict[str, Any] | None,
    seed: int,
) -> MetricResult:
    from tunesmith.eval.frechet import MIN_RELIABLE_SAMPLES, fad, frechet_distance, gaussian_stats
    from tunesmith.eval.refstats import cached_reference_stats

    def compute():
        return gaussian_stats(np.concatenate(embedder.embed(references)), warn=False)

    identity = {"kind": embedder.kind, "name": embedder.name, "sample_rate": embedder.sample_rate}
    identity["weights"] = embedder.weights_hash
    ref_stats, cached = cached_reference_stats(
        cache_dir if reference_id is not None else None, reference_id or {}, identity, compute
    )
    per_clip_emb = embedder.embed(generated)
    frames = np.concatenate(per_clip_emb)
    result = fad(frames, ref_stats, seed=seed)
    out = MetricResult("fad", {"fad": result.fad}, clips=len(generated), model=embedder.name)
    if result.fad_inf is not None:
        out.values["fad_inf"] = result.fad_inf
    out.details = {
        "frames": result.n,
        "reference_frames": result.n_reference,
        "reference_clips": len(references),
        "dim": result.dim,
        "regularization": result.regularization,
        "fad_inf_slope": result.fad_inf_slope,
        "subset_sizes": result.subset_sizes,
        "reference_cached": cached,
        "min_reliable_frames": MIN_RELIABLE_SAMPLES,
        "warnings": result.warnings,
    }
    if len(generated) <= PER_CLIP_FAD_MAX:
        out.per_clip = [
            frechet_distance(gaussian_stats(e, warn=False), ref_stats) if e.shape[0] >= 2 else float("nan")
            for e in per_clip_emb
        ]
    return out


def _needs_descriptions(name: str, generated: Sequence[AudioClip]) -> str:
    if not any(c.description for c in generated):
        return f"the reference set has no descriptions: {name} compares audio with the text it was generated from"
    return ""


def evaluate_clips(
    references: Sequence[AudioClip],
    generated: Sequence[AudioClip],
    metrics: Sequence[str],
    models: MetricModels | None = None,
    *,
    codec: Any = None,
    cache_dir: Path | None = None,
    reference_id: dict[str, Any] | None = None,
    seed: int = 0,
    chroma_fn: Any = None,
    loaded: dict[str, Any] | None = None,
) -> EvalReport:
    """Every metric in ``metrics`` on ``generated[i]`` made for ``references[i]``.

    ``codec``: the evaluated model's codec, FAD's embedder when no ``embedder_dir`` is given.
    ``reference_id``: what identifies the reference set (manifest digest, chosen segments) for the
    statistics cache in ``cache_dir``. ``loaded``: a dict the loaded metric models are kept in between
    calls (the training stage evaluates every few epochs with the same models).
    """
    if len(references) != len(generated):
        raise ValueError(f"{len(references)} reference clips but {len(generated)} generated clips")
    models = models or MetricModels()
    loaded = loaded if loaded is not None else {}
    report = EvalReport()
    for name in parse_metrics(list(metrics)):
        if not generated:
            report.results.append(MetricResult(name, skipped="no clips to evaluate"))
            continue
        if name == "fad":
            embedder = loaded.get("fad")
            if embedder is None:
                if models.embedder_dir:
                    embedder = load_embedder(models.embedder_dir, models.device, models.batch_size)
                elif codec is not None:
                    embedder = CodecLatentEmbedder(codec, name=str(getattr(codec, "source", "the model's codec")))
                else:
                    report.results.append(MetricResult(name, skipped=f"no embedding model: {where_to_put('fad')}"))
                    continue
                loaded["fad"] = embedder
            report.results.append(_fad(references, generated, embedder, cache_dir, reference_id, seed))
        elif name == "clap":
            reason = _needs_descriptions("the CLAP score", generated)
            if not reason and not models.clap_dir:
                reason = f"no CLAP model: {where_to_put('clap')}"
            if reason:
                report.results.append(MetricResult(name, skipped=reason))
                continue
            from tunesmith.eval.clap import ClapScorer

            scorer = loaded.get("clap") or ClapScorer(models.clap_dir, models.device, models.batch_size)
            loaded["clap"] = scorer
            described = [c for c in generated if c.description]
            mean, per_clip = scorer.score(described)
            report.results.append(
                MetricResult(
                    name, {"clap": mean}, len(described), f"clap:{Path(models.clap_dir).name}", per_clip=per_clip
                )
            )
        elif name == "kld":
            reason = _needs_descriptions("KLD (pairs by description)", generated)
            if not reason and not models.classifier_dir:
                reason = f"no audio classifier: {where_to_put('kld')}"
            if reason:
                report.results.append(MetricResult(name, skipped=reason))
                continue
            from tunesmith.eval.kld import TagClassifier, paired_kld

            classifier = loaded.get("kld") or TagClassifier(models.classifier_dir, models.device, models.batch_size)
            loaded["kld"] = classifier
            pairs = [(r, g) for r, g in zip(references, generated, strict=True) if g.description]
            ref_probs = classifier.predict([r for r, _ in pairs])
            gen_probs = classifier.predict([g for _, g in pairs])
            mean, per_clip = paired_kld(ref_probs, gen_probs)  # KL(ref || gen): AudioCraft's "kld" (= kld_pq)
            reverse, _ = paired_kld(gen_probs, ref_probs)
            values = {"kld": mean, "kld_qp": reverse, "kld_both": mean + reverse}
            model = f"classifier:{Path(models.classifier_dir).name}"
            report.results.append(MetricResult(name, values, len(pairs), model, per_clip=per_clip))
        elif name == "chroma":
            from tunesmith.eval.chroma_cosine import musicgen_chroma, paired_chroma_cosine

            fn, fn_name = (chroma_fn, "chroma") if chroma_fn is not None else (musicgen_chroma, "musicgen-chroma")
            mean, per_clip = paired_chroma_cosine(references, generated, fn)
            report.results.append(MetricResult(name, {"chroma": mean}, len(generated), fn_name))
            report.results[-1].per_clip = per_clip
        elif name == "wer":
            pairs = [(r, g) for r, g in zip(references, generated, strict=True) if r.transcript]
            reason = "" if pairs else "the reference set has no transcripts: WER needs the text that was spoken"
            if not reason and not models.whisper_dir:
                reason = f"no speech recogniser: {where_to_put('wer')}"
            if reason:
                report.results.append(MetricResult(name, skipped=reason))
                continue
            from tunesmith.eval.wer import WhisperTranscriber, error_rates

            whisper = loaded.get("wer") or WhisperTranscriber(models.whisper_dir, models.device, models.batch_size)
            loaded["wer"] = whisper
            hypotheses = whisper.transcribe([g for _, g in pairs])
            rates = error_rates([r.transcript for r, _ in pairs], hypotheses)
            result = MetricResult(name, {"wer": rates["wer"], "cer": rates["cer"]}, len(pairs))
            result.model = f"whisper:{Path(models.whisper_dir).name}"
            result.details = {"words": rates["words"], "chars": rates["chars"], "transcripts": hypotheses}
            report.results.append(result)
    for r in report.results:
        if r.skipped:
            log.info("%s skipped: %s", r.name, r.skipped)
    return report
