"""`tunesmith serve MODEL`: text-to-music over HTTP (see tunesmith.serve.app for the endpoints)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time

from tunesmith.commands.argtypes import add_lm_loading_arguments
from tunesmith.errors import UserError
from tunesmith.serve.app import API_KEY_ENV, build_app
from tunesmith.serve.auth import check_api_key
from tunesmith.serve.queue import Limits, generation_thread

MAX_CONNECTIONS = 64  # open connections before new ones get 503
READ_TIMEOUT = 10.0  # seconds for a client to send a whole request (headers and body)
KEEP_ALIVE = 5.0  # seconds an idle kept-alive connection stays open

log = logging.getLogger("tunesmith.serve")


def _port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port") from err


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve an LM over HTTP: POST /v1/generate → audio (micro-batched, bounded queue)",
        description=(
            "Load MODEL (LM run, checkpoint or exported model dir) once, verified, then serve POST /v1/generate "
            '(JSON {"prompt", "duration", "cfg", "temperature", "top_k", "top_p", "seed", "format": "wav"|"flac", '
            'and "genre", "bpm", "key", "instrument" for attribute-conditioned models} → audio), '
            "GET /v1/model, GET /v1/status, GET /health (liveness only) and a web page at /. Concurrent requests "
            "with the same settings are generated together (up to --max-batch); when --max-queue requests wait, "
            "new ones get 503 with Retry-After. With an API key, a browser opens /?key=KEY once (or signs in "
            "at /) and gets an HttpOnly, SameSite=Strict cookie. Defaults for omitted settings come from the "
            "run's generate settings (else the family's), as for `generate` and `review`."
        ),
    )
    p.add_argument(
        "model",
        help="LM run folder, checkpoint folder, exported model dir or transformers MusicGen dir "
        "(imported once into <runs>/.hf_imports)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key", default=None, help=f"require this key, printable ASCII (default: ${API_KEY_ENV} if set)"
    )
    p.add_argument(
        "--docs",
        action="store_true",
        help="serve /docs (Swagger UI: its scripts come from a CDN) and /openapi.json, behind the key; off by default",
    )
    add_lm_loading_arguments(p)
    p.add_argument("--max-batch", type=int, default=Limits.max_batch, help="requests generated together")
    p.add_argument("--max-queue", type=int, default=Limits.max_queue, help="waiting requests before 503")
    p.add_argument("--batch-wait-ms", type=float, default=Limits.batch_wait_ms, help="wait for companions (ms)")
    p.add_argument("--max-duration", type=float, default=Limits.max_duration, help="seconds per request")
    p.add_argument("--max-prompt-chars", type=int, default=Limits.max_prompt_chars, help="prompt length limit")
    p.add_argument(
        "--max-connections", type=int, default=MAX_CONNECTIONS, help="open connections before new ones get 503"
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=READ_TIMEOUT,
        help="seconds a client has to send a whole request, headers and body; slower ones get 408 and are closed",
    )
    p.add_argument(
        "--timeout-keep-alive", type=float, default=KEEP_ALIVE, help="seconds an idle kept-alive connection stays open"
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    import uvicorn

    if args.api_key:
        api_key = check_api_key(args.api_key, "--api-key")
    else:
        api_key = check_api_key(os.environ.get(API_KEY_ENV), f"${API_KEY_ENV}")
    if args.max_connections < 1:
        raise UserError(f"--max-connections={args.max_connections}: must be at least 1")
    for flag in ("read_timeout", "timeout_keep_alive"):
        value = getattr(args, flag)
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"--{flag.replace('_', '-')}={value}: must be a positive number of seconds")
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
    from tunesmith.inference.defaults import describe, generation_defaults
    from tunesmith.inference.lm import load_verified
    from tunesmith.runtime import pick_device
    from tunesmith.serve.guard import guarded_protocol

    device = str(pick_device()) if args.device == "auto" else args.device
    start = time.perf_counter()
    executor = generation_thread()
    from tunesmith.inference.higgs import is_higgs_model

    if is_higgs_model(args.model, args.checkpoint):  # speech (HiggsAudio v2): tunesmith.serve.higgs
        from tunesmith.serve.higgs import load_speech_app

        app = load_speech_app(args, device, limits, api_key, executor)
    else:
        job = executor.submit(load_verified, args.model, device, args.checkpoint, args.codec, args.precision)
        generator = job.result()
        limits.max_top_k = int(generator.model.card)
        log.info(
            "model %s loaded and verified in %.1f s (%d Hz, %d codebooks) on %s, precision %s",
            args.model,
            time.perf_counter() - start,
            generator.sample_rate,
            generator.model.num_codebooks,
            device,
            generator.precision,
        )
        settings, origin = generation_defaults(generator.config)
        log.info("request defaults: %s (from %s; seed: random unless given)", describe(settings), origin)
        app = build_app(generator, limits, api_key, name=str(args.model), executor=executor, docs=args.docs)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
        access_log=False,
        http=guarded_protocol(args.read_timeout, args.max_connections),
        timeout_keep_alive=args.timeout_keep_alive,  # type: ignore[arg-type]  (call_later takes seconds as float)
    )
    log.info(
        "limits: %d connections, %g s to send a request, %g s keep-alive; docs %s",
        args.max_connections,
        args.read_timeout,
        args.timeout_keep_alive,
        "on (/docs)" if args.docs else "off (--docs)",
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
