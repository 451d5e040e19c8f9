"""Resumable batch generation: prompt jobs in, ``DIR/<id>.<format>`` files and ``DIR/results.jsonl`` out.

Each job's audio is written atomically and then one fsynced line is appended to the results log, so
a killed run leaves only complete items behind and running :func:`generate_jobs` again continues with
the rest. A job's id covers its line and settings (see :mod:`tunesmith.inference.prompts`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.inference.prompts import Job, attribute_warnings, batches
from tunesmith.inference.results import RESULTS, append_result, read_done, repair_tail


@dataclasses.dataclass
class BatchOptions:
    """How a batch is generated (the model's other settings are per item)."""

    batch_size: int = 8  # items generated together (same settings)
    format: str = "wav"  # wav | flac
    prompt_audio: Path | None = None  # audio every item continues
    codec: str | Path | None = None  # default: the codec the LM was trained with
    which: str = "best"  # checkpoint of a run: best | last | epoch_NNNN
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (auto: bf16 on GPUs that support it, else fp32)
    name: str = ""  # the model as the user named it, for results.jsonl (default: the path given)


@dataclasses.dataclass
class BatchSummary:
    """What a call did; ``audio_seconds``, ``seconds`` and ``real_time_factor`` only when it generated."""

    items: int
    generated: int = 0
    already_done: int = 0
    out: str = ""
    results: str = ""
    audio_seconds: float | None = None
    seconds: float | None = None
    real_time_factor: float | None = None


def _quiet(message: str) -> None:
    pass


def result_record(job: Job, result: Any, file: str, batch_size: int, model: str) -> dict[str, Any]:
    """The ``results.jsonl`` line of a finished job: its audio ``file`` and ``result`` (an inference.lm Result)."""
    item = job.item
    return {
        "id": job.id,
        "file": file,
        "source": job.source,
        "line": job.line,
        "prompt": item.prompt,
        "conditions": item.conditions,
        "seed": item.seed,
        "duration": item.duration,
        "cfg": item.cfg,
        "temperature": item.temperature,
        "top_k": item.top_k,
        "top_p": item.top_p,
        "sample_rate": result.sample_rate,
        "audio_seconds": round(result.wav.shape[-1] / result.sample_rate, 4),
        "seconds": round(result.stats["seconds"], 4),
        "real_time_factor": round(result.stats["real_time_factor"], 3),
        "batch_size": batch_size,
        "model": model,
    }


def generate_jobs(
    model: str | Path | Any,
    jobs: list[Job],
    out: str | Path,
    options: BatchOptions | None = None,
    report: Callable[[str], None] = _quiet,
) -> BatchSummary:
    """Generate every job not yet in ``out`` with ``model`` (a path, or a loaded inference.lm Generator).

    ``report`` receives progress lines and ``file:line`` attribute warnings (e.g. print to stderr).
    The model is loaded only when something is left to generate.
    """
    from tunesmith.audio.io import load_audio, save_audio
    from tunesmith.engine.preflight import write_failure
    from tunesmith.errors import UserError
    from tunesmith.fileio import remove_stale_temps

    options = options or BatchOptions()
    if options.batch_size < 1:
        raise UserError(f"--batch-size={options.batch_size}: must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = f".{options.format}"
    results_path = out / RESULTS
    repair_tail(results_path)
    for stale in remove_stale_temps(out):  # a killed run's half-written file
        report(f"removed {stale.name}, left by a killed writer")
    done = read_done(out, suffix)
    pending = [j for j in jobs if j.id not in done]
    summary = BatchSummary(len(jobs), already_done=len(jobs) - len(pending), out=str(out), results=str(results_path))
    report(f"{len(jobs)} items: {summary.already_done} already done, {len(pending)} to generate")
    if not pending:
        return summary
    generator = _generator(model, options)
    name = options.name or (str(model) if isinstance(model, (str, Path)) else generator.name)
    report(f"model {name}: precision {getattr(generator, 'precision', 'fp32')}")
    for warning in attribute_warnings(pending, _known_attributes(generator)):
        report(f"tunesmith: warning: {warning}")
    prompt_wav = None
    if options.prompt_audio is not None:
        channels = int(getattr(generator.codec, "channels", 1))
        prompt_wav, _ = load_audio(options.prompt_audio, generator.sample_rate, channels)
    audio_seconds = 0.0
    start = time.perf_counter()
    for batch in batches(pending, options.batch_size):
        t0 = time.perf_counter()
        items = [j.item for j in batch]
        prompts = [prompt_wav] * len(items) if prompt_wav is not None else None
        for job, result in zip(batch, generator.generate(items, prompt_wavs=prompts), strict=True):
            record = result_record(job, result, job.id + suffix, len(batch), name)
            try:
                save_audio(out / record["file"], result.wav, result.sample_rate)  # atomic: complete or absent
                append_result(results_path, record)
            except (OSError, RuntimeError) as err:  # a full disk, a folder made read-only meanwhile
                done_now = summary.already_done + summary.generated
                clear = write_failure(err, out / record["file"], result.wav.nbytes, f"{done_now} finished items")
                if clear is None:
                    raise
                raise clear from err
            audio_seconds += result.wav.shape[-1] / result.sample_rate
            summary.generated += 1
        report(
            f"  {summary.generated}/{len(pending)} done "
            f"({len(batch)} × {batch[0].item.duration:g} s in {time.perf_counter() - t0:.1f} s)"
        )
    wall = time.perf_counter() - start
    summary.audio_seconds, summary.seconds = round(audio_seconds, 3), round(wall, 3)
    summary.real_time_factor = audio_seconds / wall if wall > 0 else float("nan")
    report(
        f"generated {summary.generated} items, {audio_seconds:.1f} s of audio in {wall:.1f} s: "
        f"real-time factor {summary.real_time_factor:.2f} (audio seconds per second)"
    )
    return summary


def _generator(model: str | Path | Any, options: BatchOptions) -> Any:
    if not isinstance(model, (str, Path)):
        return model
    from tunesmith.inference.lm import Generator
    from tunesmith.runtime import pick_device

    device = str(pick_device()) if options.device == "auto" else options.device
    from tunesmith.inference.higgs import HiggsGenerator, is_higgs_model

    if is_higgs_model(model, options.which):  # speech: --codec names the audio tokenizer folder
        speech = HiggsGenerator.from_path(model, device, options.which, options.precision, options.codec)
        speech.max_batch = options.batch_size
        return speech
    return Generator.from_path(
        model, device=device, which=options.which, codec=options.codec, precision=options.precision
    )


def _known_attributes(generator: Any) -> dict[str, list[str]]:
    from tunesmith.inference.lm import attribute_values

    return attribute_values(generator.model)
