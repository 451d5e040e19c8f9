"""`tunesmith serve MODEL`: text-to-music over HTTP (FastAPI + uvicorn), with micro-batching.

Endpoints (all but /health need the API key when one is set):
    GET  /              a small offline web page: prompt, settings, the model's attributes, a player,
                        a download link and the queue state (see :mod:`tunesmith.serve.page`)
    POST /v1/generate   JSON {prompt, duration, cfg, temperature, top_k, top_p, seed, format: wav|flac,
                        genre, bpm, key, instrument, melody} → the audio (16-bit), with X-Seed, X-Audio-Seconds,
                        X-Batch-Size, ... headers. The attributes are for models trained with them: a
                        value the model never saw (or an attribute it does not use) is a 422 that names it.
                        ``melody`` (melody-conditioned models): the base64 bytes of an uploaded wav/flac.
    GET  /v1/model      name, sample rate, conditioning (attributes and their known values), defaults, limits
    GET  /v1/status     model name, uptime, precision and the queue counters
    GET  /health        liveness only: {"status": "ok"} (no API key needed, nothing about the model)
    GET  /docs, /openapi.json   only with ``docs=True`` (``--docs``), behind the key like the rest

Requests wait in a bounded queue; one worker thread takes up to ``max_batch`` requests with the same
settings (duration, cfg, temperature, top-k, top-p), waiting at most ``batch_wait_ms`` for more to arrive,
and generates them as one batch. A full queue answers 503 with Retry-After; invalid input answers 422
with a message (checked by the one request schema, :mod:`tunesmith.inference.request`); a client that
disconnects leaves the queue at once, and a batch whose clients all left is aborted at the next decoding
step. The model is verified and loaded (and run once) before the port opens. An API key (``--api-key``
or ``$TUNESMITH_API_KEY``), when set, is required as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``
(or the web page's cookie, see :mod:`tunesmith.serve.auth`) and compared in constant time.
"""

# No `from __future__ import annotations`: FastAPI must see the types imported inside build_app.
import dataclasses
import io
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tunesmith.inference.request import DEFAULTS, HTTP, FieldError, http_errors, json_schema, validate
from tunesmith.serve.auth import check_api_key
from tunesmith.serve.queue import BatchQueue, Limits
from tunesmith.serve.shared import (
    MEDIA_TYPES,
    add_public_routes,
    answer_from_queue,
    key_dependency,
    queue_lifespan,
    read_request,
)

log = logging.getLogger("tunesmith.serve")

API_KEY_ENV = "TUNESMITH_API_KEY"


def model_defaults(generator: Any, limits: Limits) -> dict[str, Any]:
    """Request defaults: the one source of generation defaults (:mod:`tunesmith.inference.defaults`: the
    run's ``generate`` settings, else the family's), within the limits; the seed stays random per request."""
    from tunesmith.inference.defaults import generation_defaults

    g, _ = generation_defaults(generator.config)
    return {
        "prompt": DEFAULTS["prompt"],
        "duration": min(g["duration"], limits.max_duration),
        "cfg": min(g["cfg"], limits.max_cfg),
        "temperature": min(g["temperature"], limits.max_temperature),
        "top_k": min(g["top_k"], limits.max_top_k),
        "top_p": g["top_p"],
        "format": "wav",
    }


def validation_errors(errors: list[dict]) -> tuple[str, list[dict]]:
    """FastAPI's (pydantic's) errors → the 422 form of :func:`tunesmith.inference.request.http_errors`."""
    found = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        kind = str(err.get("type", ""))
        found.append(FieldError(".".join(loc) or "body", str(err.get("msg", "invalid")), kind, err.get("input"),
                                "input" in err and kind != "missing"))  # fmt: skip
    return http_errors(found)


def take_melody(conditions: dict, melody_model: bool) -> tuple[bytes | None, dict | None]:
    """Take a request's ``melody`` (base64 of an audio file, optionally a ``data:`` URL) out of ``conditions``:
    (its bytes, None), (None, the 422 problem ``{field, message, type}``), or (None, None) when absent. Never a
    path: the server reads no files a client names. The audio is only probed here (no torch off the
    generation thread)."""
    import base64
    import binascii

    import soundfile as sf

    value = conditions.pop("melody", None)
    if value is None:
        return None, None
    if not melody_model:
        return None, {"field": "melody", "type": "melody_unused", "message": "this model is not melody-conditioned"}
    encoded = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        data = base64.b64decode(encoded, validate=True)
        info = sf.info(io.BytesIO(data))
    except (binascii.Error, ValueError):
        return None, {"field": "melody", "type": "melody_base64", "message": "expected base64 of an audio file"}
    except (RuntimeError, TypeError):  # soundfile's LibsndfileError is a RuntimeError
        return None, {"field": "melody", "type": "melody_audio", "message": "not a readable audio file (wav or flac)"}
    if info.frames == 0:
        return None, {"field": "melody", "type": "melody_audio", "message": "the audio file holds no samples"}
    return data, None


def build_app(
    generator: Any,
    limits: Limits,
    api_key: str | None = None,
    name: str = "",
    executor: ThreadPoolExecutor | None = None,
    docs: bool = False,
) -> Any:
    """The FastAPI app around a loaded Generator; the queue's worker runs for the app's lifetime.

    ``executor``: the single thread the generator was loaded on (see :func:`generation_thread`).
    ``docs``: serve /docs and /openapi.json (behind the key when one is set); off by default.
    """
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from tunesmith.inference.lm import GenerationItem, attribute_problems, attribute_values
    from tunesmith.serve import page

    api_key = check_api_key(api_key)

    defaults = model_defaults(generator, limits)
    known_attributes = attribute_values(generator.model)
    model_cfg = getattr(generator.model, "cfg", None)
    melody_model = bool(getattr(getattr(model_cfg, "conditioner", None), "chroma", False))
    queue = BatchQueue(generator, limits, executor)
    generator.max_batch = limits.max_batch
    started = time.time()
    body_schema = {"required": True, "content": {"application/json": {"schema": json_schema(defaults, limits)}}}

    app = FastAPI(
        title="tunesmith",
        version=_version(),
        lifespan=queue_lifespan(queue),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.queue = queue
    require_key = key_dependency(api_key)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = validation_errors(list(exc.errors()))
        return JSONResponse({"error": message, "detail": details}, status_code=422)

    add_public_routes(app, api_key, page.web_page)

    @app.get("/v1/status", dependencies=[Depends(require_key)])
    async def status() -> dict:
        return {"status": "ok", "model": name, "uptime_s": round(time.time() - started, 1),
                "precision": getattr(generator, "precision", "fp32"), **queue.stats()}  # fmt: skip

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
                "melody": bool(cond.chroma),
                "attribute_values": known_attributes,
            },
            "defaults": defaults,
            "precision": getattr(generator, "precision", "fp32"),
            "limits": dataclasses.asdict(limits),
            "formats": sorted(MEDIA_TYPES),
        }

    if docs:
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/openapi.json", dependencies=[Depends(require_key)], include_in_schema=False)
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", dependencies=[Depends(require_key)], include_in_schema=False)
        async def swagger() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="tunesmith API")

    @app.post(
        "/v1/generate",
        dependencies=[Depends(require_key)],
        response_class=Response,
        openapi_extra={"requestBody": body_schema},
    )
    async def generate(request: Request) -> Response:
        values = await read_request(request, lambda data: validate(data, defaults, surface=HTTP, limits=limits))
        if not isinstance(values, dict):  # the answer: 499 or 422
            return values
        fmt = values.pop("format")
        melody, melody_problem = take_melody(values["conditions"], melody_model)
        if melody_problem is not None:
            return JSONResponse({"error": f"melody: {melody_problem['message']}", "detail": [melody_problem]},
                                status_code=422)  # fmt: skip
        problems = attribute_problems(values["conditions"], known_attributes)
        for problem in problems:
            if problem["type"] == "attribute_value":
                problem["message"] += " (GET /v1/model lists them)"
        if problems:
            message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            return JSONResponse({"error": message, "detail": problems}, status_code=422)
        if melody is not None:
            values["conditions"]["melody"] = melody
        seed = values["seed"] if values["seed"] is not None else secrets.randbelow(2**31)
        item = GenerationItem(**{**values, "seed": seed})
        return await answer_from_queue(queue, item, request, fmt)

    return app


def _version() -> str:
    from tunesmith import __version__

    return __version__
