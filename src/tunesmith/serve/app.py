"""`tunesmith serve MODEL`: text-to-music over HTTP (FastAPI + uvicorn), with micro-batching.

Endpoints:
    POST /v1/generate   JSON {prompt, duration, cfg, temperature, top_k, top_p, seed, format: wav|flac,
                        genre, bpm, key, instrument} → the audio (16-bit), with X-Seed, X-Audio-Seconds,
                        X-Batch-Size, ... headers. The attributes are for models trained with them: a
                        value the model never saw (or an attribute it does not use) is a 422 that names it.
    GET  /v1/model      name, sample rate, conditioning (attributes and their known values), defaults, limits
    GET  /health        liveness and queue counters (no API key needed)

Requests wait in a bounded queue; one worker thread takes up to ``max_batch`` requests with the same
settings (duration, cfg, temperature, top-k, top-p), waiting at most ``batch_wait_ms`` for more to arrive,
and generates them as one batch. A full queue answers 503 with Retry-After; invalid input answers 422
with a message; a client that disconnects leaves the queue at once, and a batch whose clients all left
is aborted at the next decoding step. The model is verified and loaded (and run once) before the port
opens. An API key (``--api-key`` or ``$TUNESMITH_API_KEY``), when set, is required as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` and compared in constant time.
"""

# No `from __future__ import annotations`: FastAPI must see the request model defined inside build_app.
import asyncio
import contextlib
import dataclasses
import hmac
import io
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tunesmith.serve.queue import BatchQueue, Limits, QueueFull

log = logging.getLogger("tunesmith.serve")

API_KEY_ENV = "TUNESMITH_API_KEY"
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}
MAX_SEED = 2**63 - 1


def encode_audio(wav: Any, sample_rate: int, fmt: str) -> bytes:
    """float [C, T] → 16-bit WAV or FLAC bytes: round(x · 32767) after clipping to [-1, 1], as save_audio writes."""
    import numpy as np
    import soundfile as sf

    buffer = io.BytesIO()
    pcm = np.rint(np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767.0).astype(np.int16).T
    sf.write(buffer, pcm, int(sample_rate), format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()


def model_defaults(generator: Any, limits: Limits) -> dict[str, Any]:
    """Request defaults: the model's ``generate`` settings from training, within the limits."""
    g = generator.config.get("generate") if isinstance(generator.config.get("generate"), dict) else {}
    return {
        "prompt": "",
        "duration": min(float(g.get("duration") or 10.0), limits.max_duration),
        "cfg": min(float(g.get("cfg", 3.0)), limits.max_cfg),
        "temperature": min(float(g.get("temperature", 1.0)), limits.max_temperature),
        "top_k": min(int(g.get("top_k", 250)), limits.max_top_k),
        "top_p": float(g.get("top_p", 0.0)),
        "format": "wav",
    }


def validation_errors(errors: list[dict]) -> tuple[str, list[dict]]:
    """Pydantic errors → (one readable line, JSON-safe details: field, message, type)."""
    parts, details = [], []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        kind = str(err.get("type", ""))
        if kind == "json_invalid":
            field = "body"
            message = f"not valid JSON ({(err.get('ctx') or {}).get('error', 'decode error')})"
        else:
            message = str(err.get("msg", "invalid"))
            if "input" in err and kind != "missing":
                shown = repr(err["input"])
                message += f" (got {shown[:60] + '…' if len(shown) > 60 else shown})"
        parts.append(f"{field}: {message}")
        details.append({"field": field, "message": message, "type": kind})
    return "; ".join(parts), details


def build_app(
    generator: Any,
    limits: Limits,
    api_key: str | None = None,
    name: str = "",
    executor: ThreadPoolExecutor | None = None,
) -> Any:
    """The FastAPI app around a loaded Generator; the queue's worker runs for the app's lifetime.

    ``executor``: the single thread the generator was loaded on (see :func:`generation_thread`).
    """
    from typing import Literal

    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field

    from tunesmith.inference.lm import GenerationItem, attribute_problems, attribute_values
    from tunesmith.models.lm.conditioners import ATTRIBUTES

    defaults = model_defaults(generator, limits)
    known_attributes = attribute_values(generator.model)
    queue = BatchQueue(generator, limits, executor)
    generator.max_batch = limits.max_batch
    started = time.time()

    class GenerateRequest(BaseModel):
        """One piece of audio to generate."""

        model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

        prompt: str = Field(defaults["prompt"], max_length=limits.max_prompt_chars, description="text description")
        duration: float = Field(defaults["duration"], gt=0, le=limits.max_duration, description="seconds")
        cfg: float = Field(defaults["cfg"], ge=0, le=limits.max_cfg, description="guidance (1 = off)")
        temperature: float = Field(defaults["temperature"], ge=0, le=limits.max_temperature, description="0 = greedy")
        top_k: int = Field(defaults["top_k"], ge=0, le=limits.max_top_k, description="0 = off")
        top_p: float = Field(defaults["top_p"], ge=0, le=1, description="0 = off")
        seed: int | None = Field(None, ge=0, le=MAX_SEED, description="omit for a random seed (see X-Seed)")
        format: Literal["wav", "flac"] = Field(defaults["format"])
        genre: str | list[str] | None = Field(None, description="attribute-conditioned models: genre(s)")
        bpm: float | None = Field(None, gt=0, le=1000, description="attribute-conditioned models: tempo")
        key: str | None = Field(None, max_length=40, description='attribute-conditioned models: e.g. "a minor"')
        instrument: str | list[str] | None = Field(None, description="attribute-conditioned models: instrument(s)")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        queue.start()
        yield
        await queue.stop()

    app = FastAPI(title="tunesmith", version=_version(), lifespan=lifespan)
    app.state.queue = queue

    def require_key(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not given and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            from fastapi import HTTPException

            raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = validation_errors(list(exc.errors()))
        return JSONResponse({"error": message, "detail": details}, status_code=422)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": name, "uptime_s": round(time.time() - started, 1), **queue.stats()}

    @app.get("/v1/model", dependencies=[Depends(require_key)])
    async def model_info() -> dict:
        cond = generator.model.cfg.conditioner
        return {
            "name": name,
            "sample_rate": generator.sample_rate,
            "channels": int(getattr(generator.codec, "channels", 1)),
            "frame_rate": generator.frame_rate,
            "num_codebooks": int(generator.model.num_codebooks),
            "card": int(generator.model.card),
            "conditioning": {
                "text": generator.model.conditioner is not None and cond.text != "none",
                "text_field": cond.text_field,
                "attributes": list(cond.attributes),
                "attribute_values": known_attributes,
            },
            "defaults": defaults,
            "limits": dataclasses.asdict(limits),
            "formats": sorted(MEDIA_TYPES),
        }

    @app.post("/v1/generate", dependencies=[Depends(require_key)], response_class=Response)
    async def generate(body: GenerateRequest, request: Request) -> Response:
        requested = {name: getattr(body, name) for name in ATTRIBUTES}
        attributes = {name: value for name, value in requested.items() if value is not None}
        problems = attribute_problems(attributes, known_attributes)
        for problem in problems:
            if problem["type"] == "attribute_value":
                problem["message"] += " (GET /v1/model lists them)"
        if problems:
            message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            return JSONResponse({"error": message, "detail": problems}, status_code=422)
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        item = GenerationItem(
            prompt=body.prompt,
            seed=seed,
            duration=body.duration,
            cfg=body.cfg,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            conditions=attributes,
        )
        try:
            job = queue.submit(item)
        except QueueFull as full:
            return JSONResponse(
                {"error": str(full), "retry_after": full.retry_after},
                status_code=503,
                headers={"Retry-After": str(full.retry_after)},
            )
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not watcher.done():
                watcher.cancel()
        if job.future not in done:
            queue.cancel(job)
            return Response(status_code=499)  # nobody reads it: the client is gone
        try:
            result = job.future.result()
        except QueueFull as full:  # shutting down
            return JSONResponse({"error": "the server is shutting down"}, status_code=503,
                                headers={"Retry-After": str(full.retry_after)})  # fmt: skip
        except Exception as err:
            return JSONResponse({"error": f"generation failed: {type(err).__name__}: {err}"}, status_code=500)
        audio = encode_audio(result.wav, result.sample_rate, body.format)
        now = time.perf_counter()
        headers = {
            "X-Seed": str(seed),
            "X-Audio-Seconds": f"{result.wav.shape[-1] / result.sample_rate:.4f}",
            "X-Sample-Rate": str(result.sample_rate),
            "X-Batch-Size": str(int(result.stats["batch_size"])),
            "X-Queue-Seconds": f"{job.started - job.enqueued:.4f}",
            "X-Generation-Seconds": f"{now - job.started:.4f}",
        }
        return Response(audio, media_type=MEDIA_TYPES[body.format], headers=headers)

    return app


async def _disconnected(request: Any) -> None:
    """Returns when the client has closed the connection (the request body has been read already)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


def _version() -> str:
    from tunesmith import __version__

    return __version__
