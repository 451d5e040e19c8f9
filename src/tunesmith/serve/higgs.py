"""`tunesmith serve` for speech models (HiggsAudio v2): text (+ a voice reference clip) → speech over HTTP.

Endpoints (all but /health need the API key when one is set), next to :mod:`tunesmith.serve.app`'s:
    POST /v1/generate   JSON {text, reference (base64 of a wav/flac file, or a data: URL), reference_text,
                        speaker, seed, duration (the longest audio, s), temperature, top_k, top_p,
                        format: wav|flac} → the audio (16-bit), with X-Seed, X-Audio-Seconds, X-Batch-Size, ...
                        headers. ``prompt`` is accepted for ``text``. A reference needs its transcript.
    GET  /v1/model      name, family, sample rate, frame rate, codebooks, defaults, limits
    GET  /v1/status     model name, uptime, precision and the queue counters
    GET  /health        liveness only
    GET  /              a small offline web page (text, a voice reference file, settings, a player), behind the
                        key like the MusicGen server's page (sign-in form, then a cookie)

Bad requests answer 422 with ``{"error": one line, "detail": [{field, message, type}]}`` — the numeric fields
are checked by the one request schema (:mod:`tunesmith.inference.request`), so their messages are the
MusicGen server's; a body that is not JSON, a reference that is not base64 of a readable audio file, a
reference without its transcript and an empty text are 422 too. Requests are micro-batched by the same
:class:`~tunesmith.serve.queue.BatchQueue` (same settings → one batch; each row keeps its own seed).
"""

# No `from __future__ import annotations`: FastAPI must see the types imported inside build_speech_app.
import base64
import binascii
import dataclasses
import io
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tunesmith.inference.request import (
    HTTP,
    MAX_MELODY_CHARS,
    FieldError,
    RequestError,
    validate,
)
from tunesmith.serve import shared
from tunesmith.serve.auth import check_api_key
from tunesmith.serve.queue import BatchQueue, Limits

log = logging.getLogger("tunesmith.serve")

SPEECH_FIELDS = ("text", "reference", "reference_text", "speaker")
MAX_SPEAKER_CHARS = 100
MAX_REFERENCE_SECONDS = 60.0  # a voice reference is a few seconds; longer ones only fill the model's context


def speech_defaults_for(generator: Any, limits: Limits) -> dict[str, Any]:
    """Request defaults: the model's (generation_config.json, then a run's generate section), within the limits."""
    g = generator.defaults
    return {
        "prompt": "",
        "duration": min(float(g["duration"]), limits.max_duration),
        "cfg": float(g["cfg"]),
        "temperature": min(float(g["temperature"]), limits.max_temperature),
        "top_k": min(int(g["top_k"]), limits.max_top_k),
        "top_p": float(g["top_p"]),
        "format": "wav",
    }


def _decode_reference(value: Any) -> tuple[bytes | None, FieldError | None]:
    """A base64 (or ``data:`` URL) audio file → its bytes, probed with soundfile (no torch on this thread)."""
    import soundfile as sf

    def bad(message: str, kind: str) -> tuple[None, FieldError]:
        shown = value if isinstance(value, str) and len(value) <= 60 else None
        return None, FieldError("reference", message, kind, shown, shown is not None)

    if not isinstance(value, str):
        return bad("Input should be a valid string (base64 of a wav or flac file)", "string_type")
    if len(value) > MAX_MELODY_CHARS:
        return bad(f"String should have at most {MAX_MELODY_CHARS} characters", "string_too_long")
    encoded = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        data = base64.b64decode(encoded, validate=True)
        info = sf.info(io.BytesIO(data))
    except (binascii.Error, ValueError):
        return bad("expected base64 of an audio file", "reference_base64")
    except (RuntimeError, TypeError):  # soundfile's LibsndfileError is a RuntimeError
        return bad("not a readable audio file (wav or flac)", "reference_audio")
    if info.frames == 0:
        return bad("the audio file holds no samples", "reference_audio")
    if info.frames > MAX_REFERENCE_SECONDS * info.samplerate:
        seconds = info.frames / info.samplerate
        return bad(f"{seconds:.1f} s of audio; a voice reference may be at most {MAX_REFERENCE_SECONDS:g} s",
                   "reference_too_long")  # fmt: skip
    return data, None


def parse_speech_request(data: Any, defaults: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """A request object → the values of a GenerationItem (``prompt`` = text; ``conditions``: reference bytes,
    reference_text, speaker) and ``format``. RequestError naming every bad field."""
    if not isinstance(data, dict):
        raise RequestError([FieldError("body", f"expected a JSON object, got {type(data).__name__}", "dict_type")])
    given = dict(data)
    errors: list[FieldError] = []
    if "text" in given and "prompt" in given:
        errors.append(FieldError("text", "give text or prompt, not both", "value_error"))
    text = given.pop("text", None)
    text = given.pop("prompt", None) if text is None else text
    speech = {name: given.pop(name, None) for name in ("reference", "reference_text", "speaker")}
    if text is None:
        errors.append(FieldError("text", "Field required", "missing"))
    elif not isinstance(text, str):
        errors.append(FieldError("text", "Input should be a valid string", "string_type", text, True))
    elif not text.strip():
        errors.append(FieldError("text", "empty: give the text to say", "string_too_short", text, True))
    elif len(text) > limits.max_prompt_chars:
        errors.append(FieldError("text", f"String should have at most {limits.max_prompt_chars} characters",
                                 "string_too_long"))  # fmt: skip
    conditions: dict[str, Any] = {}
    for name, limit in (("reference_text", limits.max_prompt_chars), ("speaker", MAX_SPEAKER_CHARS)):
        value = speech[name]
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append(FieldError(name, "Input should be a valid string", "string_type", value, True))
        elif len(value) > limit:
            errors.append(FieldError(name, f"String should have at most {limit} characters", "string_too_long"))
        else:
            conditions[name] = value
    if speech["reference"] is not None:
        audio, problem = _decode_reference(speech["reference"])
        if problem is not None:
            errors.append(problem)
        else:
            conditions["reference"] = audio
        if not str(speech["reference_text"] or "").strip():
            errors.append(FieldError("reference_text", "a voice reference needs its transcript", "missing"))
    elif speech["reference_text"] is not None:
        errors.append(FieldError("reference", "reference_text was given without a reference clip", "missing"))
    try:
        values = validate({**given, "prompt": ""}, defaults, surface=HTTP, limits=limits)
    except RequestError as err:
        errors.extend(err.errors)
        values = {}
    for name in values.get("conditions", {}):  # genre, bpm, key, instrument, melody: music models only
        errors.append(FieldError(name, "this model is not conditioned on attributes (a speech model)",
                                 "attribute_unused"))  # fmt: skip
    if errors:
        raise RequestError(errors)
    values["prompt"] = text
    values["conditions"] = conditions
    return values


def build_speech_app(
    generator: Any,
    limits: Limits,
    api_key: str | None = None,
    name: str = "",
    executor: ThreadPoolExecutor | None = None,
    docs: bool = False,
) -> Any:
    """The FastAPI app around a loaded :class:`~tunesmith.inference.higgs.HiggsGenerator`."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import Response

    from tunesmith.errors import UserError
    from tunesmith.inference.request import GenerationItem
    from tunesmith.serve.speech_page import speech_page

    api_key = check_api_key(api_key)
    defaults = speech_defaults_for(generator, limits)
    queue = BatchQueue(generator, limits, executor)
    generator.max_batch = limits.max_batch
    started = time.time()

    if docs:
        log.info("--docs: not available for speech models yet (the API is described in GET /v1/model)")
    app = FastAPI(
        title="tunesmith speech", lifespan=shared.queue_lifespan(queue), openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.queue = queue
    require_key = shared.key_dependency(api_key)
    shared.add_public_routes(app, api_key, speech_page)

    @app.get("/v1/status", dependencies=[Depends(require_key)])
    async def status() -> dict:
        return {"status": "ok", "model": name, "uptime_s": round(time.time() - started, 1),
                "precision": generator.precision, **queue.stats()}  # fmt: skip

    @app.get("/v1/model", dependencies=[Depends(require_key)])
    async def model_info() -> dict:
        return {
            "name": name,
            "family": "higgs_audio_v2",
            "sample_rate": generator.sample_rate,
            "channels": 1,
            "frame_rate": generator.frame_rate,
            "num_codebooks": int(generator.tokens.num_codebooks),
            "fields": [
                "text",
                "reference",
                "reference_text",
                "speaker",
                "seed",
                "duration",
                "temperature",
                "top_k",
                "top_p",
                "format",
            ],
            "repetition_aware_sampling": {
                "ras_win_len": generator.ras_win_len,
                "ras_win_max_num_repeat": generator.ras_win_max_num_repeat,
            },
            "defaults": defaults,
            "precision": generator.precision,
            "limits": dataclasses.asdict(limits),
            "formats": sorted(shared.MEDIA_TYPES),
        }

    @app.post("/v1/generate", dependencies=[Depends(require_key)], response_class=Response)
    async def generate(request: Request) -> Response:
        values = await shared.read_request(request, lambda data: parse_speech_request(data, defaults, limits))
        if not isinstance(values, dict):  # the answer: 499 or 422
            return values
        fmt = values.pop("format")
        seed = values["seed"] if values["seed"] is not None else secrets.randbelow(2**31)
        item = GenerationItem(**{**values, "seed": seed})
        return await shared.answer_from_queue(queue, item, request, fmt, user_errors=(UserError,))

    return app


def load_speech_app(args: Any, device: str, limits: Limits, api_key: str | None, executor: ThreadPoolExecutor) -> Any:
    """Load ``args.model`` (a HiggsAudio folder, tts run or checkpoint) on ``executor``, warm it up there with one
    short greedy item, and build the app (``tunesmith serve``'s speech branch)."""
    from tunesmith.inference.higgs import HiggsGenerator
    from tunesmith.inference.request import GenerationItem

    def load() -> Any:
        generator = HiggsGenerator.from_path(args.model, device, args.checkpoint, args.precision, args.codec)
        generator.generate([GenerationItem(prompt="Hello.", duration=0.2, temperature=0.0, top_k=0)])
        return generator

    start = time.perf_counter()
    generator = executor.submit(load).result()
    limits.max_top_k = int(generator.model.config.codebook_size) - 2
    log.info("speech model %s loaded in %.1f s (%d Hz, %d codebooks) on %s, precision %s; defaults from %s",
             args.model, time.perf_counter() - start, generator.sample_rate, generator.tokens.num_codebooks, device,
             generator.precision, generator.defaults_origin)  # fmt: skip
    return build_speech_app(generator, limits, api_key, name=str(args.model), executor=executor, docs=args.docs)
