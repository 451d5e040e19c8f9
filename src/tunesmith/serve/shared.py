"""What the music server (:mod:`tunesmith.serve.app`) and the speech server (:mod:`tunesmith.serve.higgs`)
share: the API-key check, the public routes (``/health``, the web page at ``/`` and its sign-in), the queue's
lifespan, reading a JSON request body, and answering a generation request from the queue with 16-bit audio.

Only the request parsing, ``/v1/model`` and the web page itself differ between the two servers.
"""

# No `from __future__ import annotations`: FastAPI must see the types imported inside the functions below.
import asyncio
import contextlib
import io
import json
import time
from collections.abc import Callable
from typing import Any

from tunesmith.inference.request import FieldError, RequestError, http_errors
from tunesmith.serve.auth import COOKIE, authorized, page_token
from tunesmith.serve.queue import BatchQueue, QueueFull

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}


def encode_audio(wav: Any, sample_rate: int, fmt: str) -> bytes:
    """float [C, T] → 16-bit WAV or FLAC bytes: round(x · 32767) after clipping to [-1, 1], as save_audio writes."""
    import numpy as np
    import soundfile as sf

    buffer = io.BytesIO()
    pcm = np.rint(np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767.0).astype(np.int16).T
    sf.write(buffer, pcm, int(sample_rate), format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()


def read_body(body: bytes, content_type: str | None) -> Any:
    """The JSON of a request body; RequestError (field ``body``) when it is missing, not JSON or not JSON at all."""
    if not body:
        raise RequestError([FieldError("body", "Field required", "missing")])
    subtype = (content_type or "application/json").split(";")[0].strip().lower().rsplit("/", 1)[-1]
    if subtype != "json" and not subtype.endswith("+json"):
        raise RequestError([FieldError("body", f"expected a JSON object, got {content_type}", "dict_type")])
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8"
        raise RequestError([FieldError("body", f"not valid JSON ({reason})", "json_invalid")]) from None


def unprocessable(errors: list[FieldError]) -> Any:
    """422 ``{"error": one line, "detail": [{field, message, type, ...}]}`` (a JSONResponse)."""
    from fastapi.responses import JSONResponse

    message, details = http_errors(errors)
    return JSONResponse({"error": message, "detail": details}, status_code=422)


def queue_lifespan(queue: BatchQueue) -> Callable[[Any], Any]:
    """The app's lifespan: the queue's worker runs while the app does."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        queue.start()
        yield
        await queue.stop()

    return lifespan


def key_dependency(api_key: str | None) -> Callable[..., None]:
    """A FastAPI dependency: 401 (``WWW-Authenticate: Bearer``) unless the request carries ``api_key``
    (header or the web page's cookie); lets everything through when no key is set."""
    from fastapi import HTTPException, Request

    def require_key(request: Request) -> None:
        if not authorized(api_key, request.headers, request.cookies):
            raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    return require_key


def add_public_routes(app: Any, api_key: str | None, web_page: Callable[[], Any]) -> None:
    """``GET /health`` (liveness, no key), ``GET /`` (``web_page()`` when signed in, else the sign-in form;
    ``/?key=KEY`` signs in once and leaves the address bar) and ``POST /sign-in`` (the form's target)."""
    from urllib.parse import parse_qs

    from fastapi import Request
    from fastapi.responses import RedirectResponse, Response

    from tunesmith.serve import page

    def signed_in(response: Response) -> Response:
        if api_key:
            response.set_cookie(COOKIE, page_token(api_key), httponly=True, samesite="strict", path="/")
        return response

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def root(request: Request, key: str | None = None) -> Response:
        if key is not None:  # `/?key=KEY` once: a cookie instead, and the key leaves the address bar
            if authorized(api_key, {"x-api-key": key}, {}):
                return signed_in(RedirectResponse("/", status_code=303, headers=page.HEADERS))
            return page.sign_in("wrong key")
        if not authorized(api_key, request.headers, request.cookies):
            return page.sign_in()
        return web_page()

    @app.post("/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0]
        if authorized(api_key, {"x-api-key": key}, {}):
            return signed_in(RedirectResponse("/", status_code=303, headers=page.HEADERS))
        return page.sign_in("wrong key")


async def read_request(request: Any, parse: Callable[[Any], dict[str, Any]]) -> Any:
    """``parse(the body's JSON)`` → the request's values; or the answer to send instead: 499 when the client
    left before its body arrived, 422 when the body or a field is invalid (RequestError)."""
    from fastapi.responses import Response
    from starlette.requests import ClientDisconnect

    try:
        return parse(read_body(await request.body(), request.headers.get("content-type")))
    except ClientDisconnect:  # left (or was closed for sending too slowly) before its body arrived
        return Response(status_code=499)
    except RequestError as err:
        return unprocessable(err.errors)


async def answer_from_queue(
    queue: BatchQueue,
    item: Any,
    request: Any,
    fmt: str,
    user_errors: tuple[type[Exception], ...] = (),
) -> Any:
    """Queue ``item`` (a GenerationItem with its seed set) and answer with its audio in ``fmt`` and the
    X-Seed, X-Audio-Seconds, X-Sample-Rate, X-Batch-Size, X-Queue-Seconds, X-Generation-Seconds headers.

    503 with Retry-After when the queue is full or shutting down; 499 (and the job leaves the queue) when the
    client disconnects first; 422 for an exception of ``user_errors`` raised by the generation (the request
    cannot be generated), 500 for any other.
    """
    from fastapi.responses import JSONResponse, Response

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
    except user_errors as err:  # e.g. a reference too short to encode, a prompt longer than the context
        return unprocessable([FieldError("body", str(err), "value_error")])
    except Exception as err:
        return JSONResponse({"error": f"generation failed: {type(err).__name__}: {err}"}, status_code=500)
    audio = encode_audio(result.wav, result.sample_rate, fmt)
    now = time.perf_counter()
    headers = {
        "X-Seed": str(item.seed),
        "X-Audio-Seconds": f"{result.wav.shape[-1] / result.sample_rate:.4f}",
        "X-Sample-Rate": str(result.sample_rate),
        "X-Batch-Size": str(int(result.stats["batch_size"])),
        "X-Queue-Seconds": f"{job.started - job.enqueued:.4f}",
        "X-Generation-Seconds": f"{now - job.started:.4f}",
    }
    return Response(audio, media_type=MEDIA_TYPES[fmt], headers=headers)


async def _disconnected(request: Any) -> None:
    """Returns when the client has closed the connection (the request body has been read already)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return
