"""``tunesmith eval``: generate from a reference set's own descriptions, then measure (tunesmith.eval.suite).

Reference segments are chosen evenly over the split (the same ones for the same ``num_samples``); item
``i`` is generated from segment ``i``'s description (and attributes) with seed ``seed + i`` and the
model's generation defaults (tunesmith.inference.defaults), through the resumable batch generation of
tunesmith.inference.batch: a killed evaluation continues where it stopped, finished samples are never
generated again. Reference audio is cut to the generated duration. Everything lands in ``OUT``:
``samples/`` (audio + results.jsonl), ``report.json``; FAD's reference statistics are cached in
``<runs>/.eval_cache``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.eval.reference import ReferenceItem, choose_reference, load_clip
from tunesmith.eval.suite import DEFAULT_METRICS, EvalReport, MetricModels, evaluate_clips, parse_metrics

log = logging.getLogger("tunesmith.eval")

MODEL_DIR_KEYS = ("embedder_dir", "clap_dir", "classifier_dir", "whisper_dir")


@dataclasses.dataclass
class EvalOptions:
    """What ``tunesmith eval`` was asked for."""

    reference: Path
    split: str = "valid"
    metrics: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_METRICS))
    num_samples: int = 16
    seed: int = 0
    checkpoint: str = "best"
    duration: float | None = None  # seconds per sample (default: the model's generation default)
    out: Path | None = None
    runs_dir: Path | None = None
    models: MetricModels = dataclasses.field(default_factory=MetricModels)
    batch_size: int = 8
    device: str = "auto"


def reference_jobs(
    items: list[ReferenceItem],
    settings: dict[str, Any],
    seed: int,
    attributes: tuple[str, ...] = (),
    melody: bool = False,
) -> list[Any]:
    """One batch-generation job per reference item: prompt = its description, seed = ``seed + i``, its
    values of the ``attributes`` the model is conditioned on and, for a melody-conditioned model
    (``melody``), the item's own audio as the melody — so the chroma metric measures how well the
    generation follows the melody it was given, not chance agreement with an unseen one."""
    from tunesmith.inference.prompts import Job
    from tunesmith.inference.request import GenerationItem

    jobs = []
    for i, ref in enumerate(items):
        item = GenerationItem(
            prompt=ref.description,
            seed=seed + i,
            duration=float(settings["duration"]),
            cfg=float(settings["cfg"]),
            temperature=float(settings["temperature"]),
            top_k=int(settings["top_k"]),
            top_p=float(settings["top_p"]),
            conditions={k: v for k, v in ref.conditions.items() if k in attributes}
            | ({"melody": str(ref.path)} if melody else {}),
        )
        payload = json.dumps({"item": dataclasses.asdict(item), "ref": ref.index}, sort_keys=True, default=str)
        jobs.append(Job(f"{i:05d}-{hashlib.sha1(payload.encode()).hexdigest()[:10]}", i + 1, "reference", item))
    return jobs


def default_out(target: Path, options: EvalOptions) -> Path:
    """``RUN/eval/<checkpoint>-<split>-n<N>-s<seed>`` for a run folder, else ``eval/<name>-...``."""
    name = f"{options.checkpoint}-{options.split}-n{options.num_samples}-s{options.seed}"
    if (target / "checkpoints").is_dir():
        return target / "eval" / name
    return Path("eval") / f"{target.name}-{name}"


def configured_models(run_config: dict[str, Any], models: MetricModels) -> MetricModels:
    """Flags win; a model dir not given by flag comes from the run config's ``evaluate`` section."""
    section = run_config.get("evaluate") if isinstance(run_config.get("evaluate"), dict) else {}
    filled = dataclasses.replace(models)
    for key in MODEL_DIR_KEYS:
        if not getattr(filled, key) and section.get(key):
            setattr(filled, key, str(section[key]))
    return filled


def evaluate_model(
    target: str | Path, options: EvalOptions, report: Callable[[str], None] = lambda line: None
) -> tuple[EvalReport, Path]:
    """Generate the reference set's samples with ``target`` (LM run, checkpoint or model dir) and measure them;
    returns the report and the output folder (also holding ``report.json``)."""
    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.artifacts.runs import default_runs_dir
    from tunesmith.fileio import atomic_write_json
    from tunesmith.inference.batch import BatchOptions, generate_jobs
    from tunesmith.inference.defaults import describe, model_generation_defaults
    from tunesmith.inference.results import RESULTS
    from tunesmith.inference.sources import resolve_model_source

    metrics = parse_metrics(options.metrics)
    if options.num_samples < 1:
        raise UserError(f"--num-samples={options.num_samples}: must be at least 1")
    reference = Path(options.reference)
    if not reference.is_dir():
        raise UserError(f"{reference}: reference dataset folder not found (a folder written by `tunesmith prepare`)")
    source = resolve_model_source(target)
    settings, origin = model_generation_defaults(source, options.checkpoint)
    if options.duration is not None:
        if not options.duration > 0:
            raise UserError(f"--duration={options.duration}: must be positive")
        settings["duration"] = float(options.duration)
    raw = ckpt.read_config(ckpt.find_checkpoint(source, which=options.checkpoint))
    run_config = raw.get("config", raw) if isinstance(raw, dict) else {}
    models = configured_models(run_config if isinstance(run_config, dict) else {}, options.models)
    items, identity = choose_reference(reference, options.split, options.num_samples)
    identity["seconds"] = settings["duration"]
    report(f"{len(items)} reference segments from {reference} ({options.split}); settings: {describe(settings)} "
           f"(from {origin})")  # fmt: skip
    out = Path(options.out) if options.out is not None else default_out(Path(target), options)
    samples = out / "samples"
    conditioner = (run_config.get("model") or {}).get("conditioner") or {} if isinstance(run_config, dict) else {}
    melody = bool(conditioner.get("chroma"))
    if melody:
        log.info("melody-conditioned model: each sample follows its reference segment's melody")
    jobs = reference_jobs(items, settings, options.seed, tuple(conditioner.get("attributes") or ()), melody)
    batch = BatchOptions(
        batch_size=options.batch_size, which=options.checkpoint, device=options.device, name=str(target)
    )
    generator = None
    if "fad" in metrics and not models.embedder_dir:  # codec latents of the model's own codec: load it once
        generator = _load_generator(source, batch)
    summary = generate_jobs(generator or source, jobs, samples, batch, report=report)
    files = _result_files(samples / RESULTS)
    missing = [j.id for j in jobs if j.id not in files]
    if missing:
        raise UserError(f"{samples}: {len(missing)} samples are missing after generation (e.g. {missing[0]})")
    duration = float(settings["duration"])
    refs = [load_clip(r.path, f"ref{r.index:05d}", duration, r) for r in items]
    gens = [load_clip(samples / files[j.id], j.id, None, r) for j, r in zip(jobs, items, strict=True)]
    runs_dir = Path(options.runs_dir) if options.runs_dir is not None else default_runs_dir()
    codec = generator.codec if generator is not None else None
    result = evaluate_clips(
        refs,
        gens,
        metrics,
        models,
        codec=codec,
        cache_dir=runs_dir / ".eval_cache",
        reference_id=identity,
        seed=options.seed,
    )
    result.model, result.reference, result.split = str(target), str(reference), options.split
    result.num_samples, result.seed = len(items), options.seed
    result.info = {
        "settings": settings,
        "settings_from": origin,
        "checkpoint": options.checkpoint,
        "generated_now": summary.generated,
        "already_done": summary.already_done,
        "samples": str(samples),
    }
    atomic_write_json(out / "report.json", result.to_dict())
    return result, out


def _load_generator(source: Path, batch: Any) -> Any:
    from tunesmith.inference.lm import Generator
    from tunesmith.runtime import pick_device

    device = str(pick_device()) if batch.device == "auto" else batch.device
    return Generator.from_path(source, device=device, which=batch.which, precision=batch.precision)


def _result_files(path: Path) -> dict[str, str]:
    """id → audio file of every complete line of a results log."""
    files: dict[str, str] = {}
    if not path.is_file():
        return files
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and (path.parent / str(record.get("file", ""))).is_file():
            files[str(record.get("id"))] = str(record["file"])
    return files
