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
import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hmac
import io
import logging
import math
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.serve")

API_KEY_ENV = "TUNESMITH_API_KEY"
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}
MAX_SEED = 2**63 - 1


@dataclasses.dataclass
class Limits:
    """What one request may ask for, and how requests are batched."""

    max_duration: float = 30.0  # seconds of audio per request
    max_prompt_chars: int = 500
    max_cfg: float = 20.0
    max_temperature: float = 5.0
    max_top_k: int = 2048  # the model's codebook size (larger values would mean "no top-k")
    max_batch: int = 8  # requests generated together
    max_queue: int = 32  # requests waiting (not yet generating); beyond → 503
    batch_wait_ms: float = 10.0  # how long the first request of a batch waits for companions

    def check(self) -> None:
        for name in ("max_duration", "max_prompt_chars", "max_batch", "max_queue"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name.replace('_', '-')}={getattr(self, name)}: must be positive")
        if not (self.batch_wait_ms >= 0 and math.isfinite(self.batch_wait_ms)):
            raise UserError(f"--batch-wait-ms={self.batch_wait_ms}: must be >= 0")


# =========================================================================== the queue


class QueueFull(Exception):
    """The queue holds ``max_queue`` waiting requests; ``retry_after`` is a guess in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in about {retry_after} s")
        self.retry_after = retry_after


class _Abandoned(Exception):
    """Every client of a running batch has disconnected."""


@dataclasses.dataclass(eq=False)
class Job:
    item: Any  # GenerationItem
    future: asyncio.Future
    enqueued: float = dataclasses.field(default_factory=time.perf_counter)
    started: float = 0.0
    cancelled: bool = False


@dataclasses.dataclass
class Counters:
    accepted: int = 0
    completed: int = 0
    rejected: int = 0  # queue full
    cancelled: int = 0  # client left (waiting or running)
    failed: int = 0
    batches: int = 0
    aborted_batches: int = 0


def generation_thread() -> ThreadPoolExecutor:
    """The one thread that loads, warms up and runs the model.

    On CPU, torch keeps one OpenMP thread team per calling thread; a second team (the main thread's,
    from loading there) makes libgomp throttle its spin-waiting once its threads outnumber the cores,
    and every op then pays a thread wake-up: measured 2.4x slower single requests on 2 cores. Doing
    everything on this thread keeps a single team.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunesmith-generate")


class BatchQueue:
    """A bounded queue of generation jobs in front of a Generator, drained in micro-batches by one thread.

    Jobs are submitted and cancelled on the event loop; the worker coroutine forms batches of up to
    ``max_batch`` compatible jobs (same ``batch_key``, in arrival order) and runs each in a single
    worker thread, so the model is only ever used by one thread.
    """

    def __init__(self, generator: Any, limits: Limits, executor: ThreadPoolExecutor | None = None) -> None:
        self.generator = generator
        self.limits = limits
        self.waiting: collections.deque[Job] = collections.deque()
        self.running: list[Job] = []
        self.counters = Counters()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = executor or generation_thread()
        self._batch_seconds = 1.0  # running mean of a batch's wall time, for Retry-After

    # ------------------------------------------------------------------ event-loop side

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="tunesmith-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in list(self.waiting) + self.running:
            job.cancelled = True
            if not job.future.done():
                job.future.set_exception(QueueFull(5))
        self.waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def retry_after(self) -> int:
        batches_ahead = len(self.waiting) / self.limits.max_batch + (1 if self.running else 0)
        return max(1, min(60, math.ceil(batches_ahead * self._batch_seconds)))

    def submit(self, item: Any) -> Job:
        """Queue ``item``; raises QueueFull when ``max_queue`` jobs are already waiting."""
        if len(self.waiting) >= self.limits.max_queue:
            self.counters.rejected += 1
            raise QueueFull(self.retry_after())
        job = Job(item, asyncio.get_running_loop().create_future())
        self.waiting.append(job)
        self.counters.accepted += 1
        assert self._arrived is not None
        self._arrived.set()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: a waiting job leaves the queue now; a running batch stops once all its clients left."""
        if job.cancelled or job.future.done():
            return
        job.cancelled = True
        self.counters.cancelled += 1
        with contextlib.suppress(ValueError):  # not waiting: running, and the worker thread sees the flag
            self.waiting.remove(job)

    def stats(self) -> dict[str, Any]:
        return {"queued": len(self.waiting), "running": len(self.running), **dataclasses.asdict(self.counters)}

    def _take_batch(self) -> list[Job]:
        """The oldest waiting job and up to max_batch - 1 later ones with the same settings."""
        first = self.waiting.popleft()
        batch = [first]
        key = first.item.batch_key()
        for job in list(self.waiting):
            if len(batch) >= self.limits.max_batch:
                break
            if job.item.batch_key() == key:
                self.waiting.remove(job)
                batch.append(job)
        return batch

    def _companions_possible(self, batch: list[Job]) -> bool:
        return len(batch) < self.limits.max_batch and self.limits.batch_wait_ms > 0

    async def _worker(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self.waiting:
                self._arrived.clear()
                await self._arrived.wait()
            batch = self._take_batch()
            deadline = loop.time() + self.limits.batch_wait_ms / 1000.0
            while self._companions_possible(batch) and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
                key = batch[0].item.batch_key()
                for job in list(self.waiting):
                    if len(batch) < self.limits.max_batch and job.item.batch_key() == key:
                        self.waiting.remove(job)
                        batch.append(job)
            batch = [job for job in batch if not job.cancelled]
            if not batch:
                continue
            self.running = batch
            start = time.perf_counter()
            for job in batch:
                job.started = start
            try:
                results = await loop.run_in_executor(self._executor, self._generate, batch)
            except _Abandoned:
                self.counters.aborted_batches += 1
                log.info("batch of %d abandoned by its clients; stopped", len(batch))
            except Exception as err:  # a failure answers this batch's requests with 500, the server lives on
                log.exception("generation failed")
                self.counters.failed += len(batch)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
            else:
                self.counters.batches += 1
                for job, result in zip(batch, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
                        self.counters.completed += 1
            finally:
                self.running = []
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.perf_counter() - start)

    # ------------------------------------------------------------------ worker-thread side

    def _generate(self, batch: list[Job]) -> list[Any]:
        def on_step(done: int, total: int) -> None:
            if all(job.cancelled for job in batch):
                raise _Abandoned

        return self.generator.generate([job.item for job in batch], on_step=on_step)


# =========================================================================== the app


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

    from tunesmith.generate import GenerationItem, attribute_problems, attribute_values
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


# =========================================================================== loading


def load_verified(model: str | Path, device: str, which: str = "best", codec: str | None = None) -> Any:
    """Verify every file of the model (checksums) and load it with its codec; then generate one frame."""
    from tunesmith.engine import checkpoint as ckpt
    from tunesmith.generate import GenerationItem, Generator

    folder = ckpt.find_checkpoint(model, which=which)
    problems = ckpt.verify_folder(folder)
    if problems:
        raise UserError(f"{folder}: the model failed verification:\n  - " + "\n  - ".join(problems))
    generator = Generator.from_path(folder, device=device, codec=codec)
    warm = GenerationItem(duration=1.0 / generator.frame_rate, seed=0, top_k=0)
    try:
        generator.generate([warm])
    except Exception as err:
        raise UserError(f"{folder}: the model loads but cannot generate ({type(err).__name__}: {err})") from err
    return generator


def _port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port") from err


# =========================================================================== CLI


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve an LM over HTTP: POST /v1/generate → audio (micro-batched, bounded queue)",
        description=(
            "Load MODEL (LM run, checkpoint or exported model dir) once, verified, then serve POST /v1/generate "
            '(JSON {"prompt", "duration", "cfg", "temperature", "top_k", "top_p", "seed", "format": "wav"|"flac", '
            'and "genre", "bpm", "key", "instrument" for attribute-conditioned models} → audio), '
            "GET /v1/model and GET /health. Concurrent requests with the same settings are generated "
            "together (up to --max-batch); when --max-queue requests wait, new ones get 503 with Retry-After."
        ),
    )
    p.add_argument("model", help="LM run folder, checkpoint folder or exported model dir")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help=f"require this key (default: ${API_KEY_ENV} if set)")
    p.add_argument("--checkpoint", default="best", help="which checkpoint of a run: best | last | epoch_NNNN")
    p.add_argument("--codec", default=None, help="codec run or model dir (default: the one the LM was trained with)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-batch", type=int, default=Limits.max_batch, help="requests generated together")
    p.add_argument("--max-queue", type=int, default=Limits.max_queue, help="waiting requests before 503")
    p.add_argument("--batch-wait-ms", type=float, default=Limits.batch_wait_ms, help="wait for companions (ms)")
    p.add_argument("--max-duration", type=float, default=Limits.max_duration, help="seconds per request")
    p.add_argument("--max-prompt-chars", type=int, default=Limits.max_prompt_chars, help="prompt length limit")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    limits = Limits(
        max_duration=args.max_duration,
        max_prompt_chars=args.max_prompt_chars,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        batch_wait_ms=args.batch_wait_ms,
    )
    limits.check()
    if not 0 < args.port < 65536:
        raise UserError(f"--port={args.port}: must be in 1..65535")
    _port_free(args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("listening on %s without an API key: anyone who can reach it can use it", args.host)
    from tunesmith.engine.distributed import pick_device

    device = str(pick_device()) if args.device == "auto" else args.device
    start = time.perf_counter()
    executor = generation_thread()
    generator = executor.submit(load_verified, args.model, device, args.checkpoint, args.codec).result()
    limits.max_top_k = int(generator.model.card)
    log.info(
        "model %s loaded and verified in %.1f s (%d Hz, %d codebooks) on %s",
        args.model,
        time.perf_counter() - start,
        generator.sample_rate,
        generator.model.num_codebooks,
        device,
    )
    app = build_app(generator, limits, api_key, name=str(args.model), executor=executor)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5, access_log=False
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
