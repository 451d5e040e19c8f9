"""Connection guards for uvicorn's h11 protocol: a request read deadline and a connection limit.

uvicorn 0.54 closes idle keep-alive connections (``timeout_keep_alive``) and can refuse requests over
``limit_concurrency``, but nothing bounds how long a client may take to *send* a request: h11 waits for
the rest of the headers (or body) forever, so trickling clients hold connections indefinitely. Here:

- A client must send a whole request — headers and body — within ``read_timeout`` seconds of its first
  byte (or of connecting); otherwise it gets ``408 Request Timeout`` (when nothing was answered yet) and
  the connection is closed. A connection that sends nothing at all is closed the same way.
- When more than ``max_connections`` connections are open, a new one is answered ``503`` with a JSON
  body that says why and ``Retry-After``, then closed; the open ones are not disturbed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("tunesmith.serve")

_TIMEOUT_BODY = json.dumps({"error": "request not received in time; the connection is closed"}).encode()
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)
_READING = (h11.IDLE, h11.SEND_BODY)  # the client's states while a request is still arriving


def too_many_connections(limit: int) -> Any:
    """An ASGI app that answers every request 503 (JSON ``error``, ``Retry-After: 1``) and closes."""
    body = json.dumps({"error": f"too many connections (the server's limit is {limit}); retry shortly",
                       "retry_after": 1}).encode()  # fmt: skip

    async def app(scope: dict, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"retry-after", b"1"), (b"connection", b"close")]  # fmt: skip
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


class _Warnings:
    """At most one log line per ``every`` seconds per kind, with the count of the others."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.last, self.skipped = every, {}, {}

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -1e9) >= self.every:
            more = self.skipped.pop(kind, 0)
            log.warning(message + (f" (and {more} more since the last report)" if more else ""), *args)
            self.last[kind] = now
        else:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request read deadline and a connection limit (see the module doc)."""

    read_timeout: float = 10.0
    max_connections: int | None = None
    warnings = _Warnings()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.app = too_many_connections(self.max_connections)  # this connection only: answered 503
            self.warnings.warn("limit", "connection limit %d reached: answering 503", self.max_connections)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # a new request on a kept-alive connection starts its own clock
        super().data_received(data)
        if self.conn.their_state not in _READING:
            self._disarm()  # the whole request is in

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()  # type: ignore[union-attr]
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state not in _READING:
            return
        if self.conn.their_state is h11.SEND_BODY and self.flow.read_paused:
            self._arm()  # the application is behind in reading the body, not the client in sending it
            return
        if self.conn.our_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(REQUEST_TIMEOUT)  # nothing answered yet: say why
        self.warnings.warn("slow", "closed a connection that did not send its request within %g s", self.read_timeout)
        self.transport.close()


def guarded_protocol(read_timeout: float, max_connections: int | None) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with these limits (for ``uvicorn.Config(http=...)``)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"read_timeout": float(read_timeout), "max_connections": max_connections, "warnings": _Warnings()},
    )
