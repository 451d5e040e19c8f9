"""Speech with HiggsAudio v2: text (+ optional voice reference clip and its transcript) → waveform.

:class:`HiggsGenerator` wraps :func:`tunesmith.models.higgs.model.load_higgs` (a transformers HiggsAudio v2
folder, an imported one, a ``tunesmith train tts`` run or one of its checkpoints) and turns
:class:`~tunesmith.inference.request.GenerationItem` s into audio, like :class:`tunesmith.inference.lm.Generator`
does for MusicGen, so batch generation (:func:`tunesmith.inference.batch.generate_jobs`), ``serve`` and
``review`` use it the same way. For speech an item's fields mean:

- ``prompt``: the text to say (NFC-normalised by the prompt builder, as in training);
- ``conditions["reference"]`` (a path, or the file's bytes) and ``conditions["reference_text"]``: a voice
  reference clip and its transcript (any sample rate and channel count: mixed to mono and resampled to the
  audio tokenizer's 24 kHz by :mod:`tunesmith.audio`, then encoded once per clip); ``conditions["speaker"]``: a
  label only (shown by review and kept in results.jsonl);
- ``duration``: the longest audio in seconds (generation stops earlier at the model's end of stream);
- ``temperature`` (0 = greedy), ``top_k`` (0 = off), ``top_p`` (0 = off), per codebook; ``seed``: the row's own
  ``torch.Generator`` (same seed → same audio, whatever the batch); ``cfg`` is not used by this family.

Repetition-aware sampling (``ras_win_len`` / ``ras_win_max_num_repeat``) is a model setting: the source's
``generation_config.json``, overridden by a run's ``generate`` section (:func:`speech_defaults`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError
from tunesmith.inference.request import GenerationItem, parse_item

log = logging.getLogger("tunesmith.inference")

FAMILY = "higgs_audio_v2"
SPEECH_FIELDS = ("reference", "reference_text", "speaker")  # an item's speech conditions
SAMPLING_KEYS = ("duration", "cfg", "temperature", "top_k", "top_p", "seed")
# the family's settings when neither the source's generation_config.json nor a run says otherwise
FAMILY_DEFAULTS: dict[str, Any] = {
    "duration": 20.0,
    "cfg": 1.0,
    "temperature": 0.0,
    "top_k": 0,
    "top_p": 0.0,
    "seed": 0,
}
RAS_DEFAULTS = {"ras_win_len": 0, "ras_win_max_num_repeat": 2}
MAX_CACHED_REFERENCES = 32  # encoded voice references kept per generator (a server sees many)


def _stored_config(path: Path, which: str) -> dict | None:
    """The config.json of a checkpoint folder, or of a run's ``which`` (else ``last``) checkpoint; None when there
    is none. JSON only: the loader verifies the checksums later."""
    for config in [path / "config.json"] + [path / "checkpoints" / name / "config.json" for name in (which, "last")]:
        try:
            stored = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return stored if isinstance(stored, dict) else None
    return None


def is_higgs_model(path: str | Path, which: str = "best") -> bool:
    """A HiggsAudio v2 folder (transformers or imported), or a run / checkpoint folder of this family (its
    checkpoint's ``meta.family``, or a run's task ``tts``). Reads JSON only — no checksums, so asking is cheap
    for any model; never raises: anything else is False."""
    from tunesmith.models.higgs.model import is_higgs_source

    path = Path(path).expanduser()
    if not path.is_dir():
        return False
    if is_higgs_source(path):
        return True
    stored = _stored_config(path, which)
    if stored is not None:
        meta = stored.get("meta")
        return isinstance(meta, dict) and meta.get("family") == FAMILY
    try:
        run = json.loads((path / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(run, dict) and run.get("task") == "tts"


def _source_generation_config(source: Path) -> dict[str, Any]:
    path = source / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: unreadable; using the family's generation defaults", path)
        return {}
    return data if isinstance(data, dict) else {}


def speech_defaults(source: Path, run_config: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, int], str]:
    """(item settings with :data:`SAMPLING_KEYS`, RAS settings, where they came from).

    The family's defaults, then the source's ``generation_config.json`` (``do_sample`` false → greedy,
    ``temperature``, ``top_k``, ``top_p`` (1 = off), ``ras_win_len``, ``ras_win_max_num_repeat``), then a tts run's
    ``generate`` section (the same keys, ``max_seconds`` → duration)."""
    settings, ras = dict(FAMILY_DEFAULTS), dict(RAS_DEFAULTS)
    origins = []
    gen = _source_generation_config(source)
    if gen:
        if gen.get("do_sample"):
            settings["temperature"] = float(gen.get("temperature") or 1.0)
            settings["top_k"] = int(gen.get("top_k") or 0)
            top_p = float(gen.get("top_p") or 0.0)
            settings["top_p"] = 0.0 if top_p >= 1.0 else top_p
        for key in RAS_DEFAULTS:
            if isinstance(gen.get(key), int) and not isinstance(gen.get(key), bool):
                ras[key] = int(gen[key])
        origins.append("the model's generation_config.json")
    section = (run_config or {}).get("generate")
    if isinstance(section, Mapping):
        used = False
        for key, value in section.items():
            name = "duration" if key == "max_seconds" else key
            if value is None or isinstance(value, bool):
                continue
            if name in settings:
                settings[name] = type(FAMILY_DEFAULTS[name])(value)
                used = True
            elif name in ras:
                ras[name] = int(value)
                used = True
        if used:
            origins.append("the run's generate settings")
    return settings, ras, " and ".join(origins) or f"the {FAMILY} family's defaults"


def model_speech_defaults(path: str | Path, which: str = "best") -> tuple[dict[str, Any], dict[str, int], str]:
    """:func:`speech_defaults` of a HiggsAudio folder, run or checkpoint, reading configs only (no weights)."""
    from tunesmith.models.higgs.model import is_higgs_source

    path = Path(path).expanduser()
    if is_higgs_source(path):
        return speech_defaults(path, None)
    stored = _stored_config(path, which)
    if stored is None:
        raise UserError(f"{path}: no checkpoint config.json (not a HiggsAudio v2 folder, tts run or checkpoint)")
    meta = stored.get("meta") or {}
    config = stored.get("config")
    return speech_defaults(Path(str(meta.get("source", ""))), config if isinstance(config, Mapping) else None)


def load_reference(source: str | Path | bytes, sample_rate: int) -> np.ndarray:
    """A reference clip (a file path, or an audio file's bytes) → float32 mono ``[T]`` at ``sample_rate`` Hz."""
    from tunesmith.audio.io import convert_channels, load_audio, resample

    if isinstance(source, bytes):
        import soundfile as sf

        try:
            data, rate = sf.read(io.BytesIO(source), dtype="float32", always_2d=True)
        except (RuntimeError, TypeError, ValueError) as err:
            raise UserError(f"reference: not a readable audio file (wav or flac): {err}") from err
        wav = convert_channels(np.ascontiguousarray(data.T), 1)
        if rate != sample_rate:
            wav = resample(wav, int(rate), int(sample_rate))
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"reference {path}: no such audio file")
        wav, _ = load_audio(path, sample_rate, 1)
    if wav.shape[-1] == 0:
        raise UserError("reference: the audio holds no samples")
    return np.ascontiguousarray(wav[0], dtype=np.float32)


@dataclasses.dataclass
class SpeechResult:
    """A generated item: ``wav`` float32 ``[1, T]`` at ``sample_rate`` Hz, ``codes`` ``[K, F]``, timing ``stats``."""

    item: GenerationItem
    wav: np.ndarray
    sample_rate: int
    codes: np.ndarray
    stats: dict[str, float]


def check_speech_item(item: GenerationItem) -> None:
    """A voice reference needs its transcript and the other way round; the text must not be empty."""
    cond = item.conditions
    if not str(item.prompt).strip():
        raise UserError("text: empty — give the text to say")
    has_ref, has_text = cond.get("reference") not in (None, ""), bool(str(cond.get("reference_text") or "").strip())
    if has_ref and not has_text:
        raise UserError("reference_text: a voice reference needs its transcript (reference_text)")
    if has_text and not has_ref:
        raise UserError("reference: reference_text was given without a reference clip")


class HiggsGenerator:
    """A loaded HiggsAudio v2 model and its audio tokenizer, ready to turn items into speech."""

    def __init__(self, loaded: Any, name: str = "", precision: str = "fp32", max_batch: int = 8) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.codec = loaded.audio_tokenizer
        self.builder = loaded.builder
        self.tokens = loaded.checkpoint.tokens
        self.config = loaded.run_config or {}
        self.name = name or str(loaded.source)
        self.precision = precision
        self.max_batch = max_batch
        self.sample_rate = int(self.codec.sample_rate)
        self.frame_rate = float(self.codec.frame_rate)
        self.defaults, ras, self.defaults_origin = speech_defaults(Path(loaded.source), loaded.run_config)
        self.ras_win_len, self.ras_win_max_num_repeat = ras["ras_win_len"], ras["ras_win_max_num_repeat"]
        self.device = next(self.model.parameters()).device
        self._references: collections.OrderedDict[str, Any] = collections.OrderedDict()

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        device: str = "cpu",
        which: str = "best",
        precision: str = "auto",
        audio_tokenizer: str | Path | None = None,
    ) -> HiggsGenerator:
        from tunesmith.inference.precision import dtype_of, resolve_precision
        from tunesmith.models.higgs.model import load_higgs

        resolved = resolve_precision(precision, device)
        loaded = load_higgs(path, device=device, dtype=dtype_of(resolved), audio_tokenizer=audio_tokenizer, which=which)
        return cls(loaded, name=str(path), precision=resolved)

    # ------------------------------------------------------------------ references

    def reference_codes(self, source: str | Path | bytes) -> Any:
        """The voice reference's codes ``[K, F]`` (encoded once per clip content or path)."""
        import torch

        key = hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else str(Path(source).resolve())
        if key in self._references:
            self._references.move_to_end(key)
            return self._references[key]
        wav = load_reference(source, self.sample_rate)
        with torch.no_grad():
            codes = self.codec.encode(torch.from_numpy(wav)[None, None].to(self.device))[0].cpu()
        self._references[key] = codes
        while len(self._references) > MAX_CACHED_REFERENCES:
            self._references.popitem(last=False)
        return codes

    def example(self, item: GenerationItem) -> Any:
        from tunesmith.models.higgs.prompt import SpeechExample

        check_speech_item(item)
        cond = item.conditions
        if cond.get("reference") not in (None, ""):
            return SpeechExample(
                item.prompt,
                reference_text=str(cond["reference_text"]),
                reference_codes=self.reference_codes(cond["reference"]),
            )
        return SpeechExample(item.prompt)

    # ------------------------------------------------------------------ generation

    def sampling(self, item: GenerationItem) -> Any:
        from tunesmith.models.higgs.generation import SamplingSettings

        return SamplingSettings(
            temperature=float(item.temperature),
            top_k=int(item.top_k),
            top_p=float(item.top_p),
            ras_win_len=self.ras_win_len,
            ras_win_max_num_repeat=self.ras_win_max_num_repeat,
        )

    def generate(
        self,
        items: list[GenerationItem | dict],
        *,
        prompt_wavs: list[Any] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[SpeechResult]:
        """Items (or request dicts) → one :class:`SpeechResult` each, in order; items with the same settings
        share a batch (up to :attr:`max_batch`). ``prompt_wavs`` (audio continuation) does not apply."""
        if prompt_wavs is not None and any(w is not None for w in prompt_wavs):
            raise UserError("--prompt-audio does not apply to HiggsAudio models; use --reference and --reference-text")
        parsed = [it if isinstance(it, GenerationItem) else parse_item(it, self.defaults) for it in items]
        groups: dict[tuple, list[int]] = {}
        for i, it in enumerate(parsed):
            groups.setdefault(it.batch_key(), []).append(i)
        results: list[SpeechResult | None] = [None] * len(parsed)
        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                for i, res in zip(chunk, self._generate_batch([parsed[i] for i in chunk], on_step), strict=True):
                    results[i] = res
        return [r for r in results if r is not None]

    def max_frames(self, item: GenerationItem) -> int:
        """Frames for ``duration`` seconds of audio plus the BOS frame and the K − 1 delay frames."""
        return max(1, math.ceil(float(item.duration) * self.frame_rate)) + self.tokens.num_codebooks

    def _generate_batch(self, items: list[GenerationItem], on_step: Any) -> list[SpeechResult]:
        import torch

        from tunesmith.models.higgs.generation import frames_to_codes, generate_audio_frames, row_generators

        start = time.perf_counter()
        examples = [self.example(it) for it in items]
        batch = self.builder.collate([self.builder.encode(ex) for ex in examples])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        max_frames = self.max_frames(items[0])
        context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        prompt = batch["input_ids"].shape[1]
        if context and prompt + max_frames > context:
            if prompt + self.tokens.num_codebooks + 1 > context:
                raise UserError(
                    f"the prompt is {prompt} tokens (text and voice reference), the model's context "
                    f"{context}: use a shorter reference clip or text"
                )
            max_frames = context - prompt
            log.warning("duration capped to %.1f s by the model's context", max_frames / self.frame_rate)
        gens = row_generators([it.seed for it in items], self.device)
        frames = generate_audio_frames(
            self.model, batch, max_frames, self.sampling(items[0]), gens, on_step=on_step
        ).cpu()
        seconds = time.perf_counter() - start
        out = []
        for row, item in enumerate(items):
            codes = frames_to_codes(frames[row], self.tokens.stream_bos_id, self.tokens.stream_eos_id)
            if codes.shape[1]:
                with torch.no_grad():
                    wav = self.codec.decode(codes[None].to(self.device)).float().cpu().numpy()[0]
            else:  # the model ended before any audio frame
                wav = np.zeros((1, 0), dtype=np.float32)
            audio_seconds = wav.shape[-1] / self.sample_rate
            stats = {
                "seconds": seconds,
                "real_time_factor": audio_seconds / seconds if seconds > 0 else float("nan"),
                "batch_size": float(len(items)),
                "frames": float(codes.shape[1]),
            }
            out.append(SpeechResult(item, wav, self.sample_rate, codes.numpy(), stats))
        return out


# ---------------------------------------------------------------------------------------------- prompt files


def with_references(jobs: list[Any], reference: Path | None, reference_text: str | None) -> list[Any]:
    """Prompt jobs with their voice reference settled: a line's own ``reference`` (a path relative to its prompts
    file's folder, made absolute) or else the command's ``--reference``/``--reference-text``; ids recomputed so
    that a changed reference regenerates. UserError for a reference without its transcript (or the reverse)."""
    from tunesmith.inference.prompts import Job, _job_id

    if (reference is None) != (reference_text is None):
        raise UserError("--reference and --reference-text go together (the clip and what is said in it)")
    out = []
    for index, job in enumerate(jobs):
        cond = dict(job.item.conditions)
        if cond.get("reference") not in (None, ""):
            path = Path(str(cond["reference"])).expanduser()
            if not path.is_absolute() and job.source != "--prompt":
                path = Path(job.source).parent / path
            cond["reference"] = str(path.resolve())
        elif reference is not None:
            cond["reference"] = str(Path(reference).expanduser().resolve())
            cond["reference_text"] = reference_text
        item = GenerationItem(**{**job.item.__dict__, "conditions": cond})
        prefix = job.id.split("-", 1)[0]
        index = int(prefix) if prefix.isdigit() else index
        out.append(Job(_job_id(index, item), job.line, job.source, item, job.fields))
    return out


def check_jobs(jobs: list[Any]) -> tuple[list[Any], list[str]]:
    """(usable jobs, ``file:line: message`` problems): empty texts, references without transcripts, missing clips."""
    good, problems = [], []
    for job in jobs:
        try:
            check_speech_item(job.item)
            ref = job.item.conditions.get("reference")
            if ref not in (None, "") and not Path(str(ref)).is_file():
                raise UserError(f"reference {ref}: no such audio file")
        except UserError as err:
            problems.append(f"{job.source}:{job.line}: {err}")
            continue
        good.append(job)
    return good, problems
