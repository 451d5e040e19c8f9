"""An HTTP(S) downloader that survives kills and dropped connections: Range resume, retries with backoff,
parallel parts of one file, and the checksum computed while the bytes arrive.

Files beside the target ``DIR/NAME``:

- ``NAME.part.json``: the plan, written (atomically) before the first byte: url, size, the server's
  validator (ETag or Last-Modified) and the byte ranges of the parts.
- ``NAME.part<k>``: part ``k``, append-only. Its length *is* its progress: every block is written with
  ``write()`` before it is counted, so after a SIGKILL the bytes on disk are exactly the bytes received and
  a re-run asks the server (``Range: bytes=<start + length>-<end>``, ``If-Range: <validator>``) only for the
  rest. A server that answers 200 instead of 206 (no ranges, or the file changed) restarts that file.

When every part is complete, parts 1.. are appended to part 0 (hashed on the way), which is renamed to
``NAME``. Part 0 is hashed while it downloads (on a separate thread), a resumed prefix first.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import http.client
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.download.verify import CHUNK, BackgroundHash
from tunesmith.fileio import atomic_write_json

log = logging.getLogger("tunesmith.data.download")

USER_AGENT = "tunesmith-download"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.EISDIR})


class DownloadError(Exception):
    """A file could not be fetched (after the retries); the message says why."""


@dataclass(frozen=True)
class RetryPolicy:
    """``retries``: failed attempts in a row (without a byte of progress) before giving up on a part;
    waits start at ``backoff`` seconds and double up to ``max_backoff`` (±25 % jitter); ``timeout``:
    seconds without data before a connection counts as dropped."""

    retries: int = 6
    backoff: float = 1.0
    max_backoff: float = 30.0
    timeout: float = 30.0

    def wait(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * 2 ** max(0, attempt - 1))
        return base * random.uniform(0.75, 1.25)


@dataclass(frozen=True)
class RemoteInfo:
    """What the server says about a file: size (None when it does not say), Range support, validator."""

    size: int | None
    ranges: bool
    validator: str | None


@dataclass
class FetchResult:
    fetched: int  # bytes received in this call
    resumed_from: int  # bytes already on disk when it started
    size: int
    digest: str | None  # hex digest by the requested algorithm


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> urllib.request.Request:
    return urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **(headers or {})})


def _retryable(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code in RETRYABLE_STATUS
    if isinstance(err, OSError) and err.errno in LOCAL_ERRNOS:  # the disk's fault: retrying will not help
        return False
    return isinstance(err, (urllib.error.URLError, OSError, http.client.HTTPException, TimeoutError))


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"cannot connect ({err.reason})"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _with_retries(what: str, policy: RetryPolicy, attempt_fn: Callable[[], Any], stop: threading.Event | None = None):
    attempt = 0
    while True:
        try:
            return attempt_fn()
        except Exception as err:
            if not _retryable(err):
                raise DownloadError(f"{what}: {_describe(err)}") from None
            attempt += 1
            if attempt > policy.retries or (stop is not None and stop.is_set()):
                raise DownloadError(f"{what}: {_describe(err)} (gave up after {attempt} attempts)") from None
            delay = policy.wait(attempt)
            log.warning("%s: %s; retrying in %.1f s (%d/%d)", what, _describe(err), delay, attempt, policy.retries)
            time.sleep(delay)


def _validator(headers: Any) -> str | None:
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    modified = headers.get("Last-Modified")
    return modified if modified and email.utils.parsedate_to_datetime(modified) else None


def probe(url: str, policy: RetryPolicy) -> RemoteInfo:
    """HEAD ``url`` (with retries): size, whether it accepts ranges, validator. A server that refuses
    HEAD is asked for its first byte instead."""

    def head() -> RemoteInfo:
        try:
            with urllib.request.urlopen(_request(url, "HEAD"), timeout=policy.timeout) as resp:
                length = resp.headers.get("Content-Length")
                ranges = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
                return RemoteInfo(int(length) if length else None, ranges, _validator(resp.headers))
        except urllib.error.HTTPError as err:
            if err.code not in (405, 501):
                raise
        with urllib.request.urlopen(_request(url, headers={"Range": "bytes=0-0"}), timeout=policy.timeout) as resp:
            if resp.status == 206:
                total = _content_range(resp.headers.get("Content-Range", ""))[2]
                return RemoteInfo(total, True, _validator(resp.headers))
            length = resp.headers.get("Content-Length")
            return RemoteInfo(int(length) if length else None, False, _validator(resp.headers))

    return _with_retries(url, policy, head)


def _content_range(value: str) -> tuple[int, int, int | None]:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not match:
        raise http.client.HTTPException(f"bad Content-Range {value!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


class _Restart(Exception):
    """The server sent the whole file where a range was asked: start this file over."""


class _Part:
    """Bytes ``[start, end)`` of the file (``end`` None: until the server stops) in ``path``."""

    def __init__(self, path: Path, start: int, end: int | None, ranged: bool = False) -> None:
        self.path, self.start, self.end = path, start, end
        self.ranged = ranged  # one of several parts: always asked for by range

    def have(self) -> int:
        try:
            n = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if self.end is not None and n > self.end - self.start:  # more than asked: cut (never happens by us)
            with open(self.path, "r+b") as f:
                f.truncate(self.end - self.start)
            n = self.end - self.start
        return n


class _Stop:
    """A stop flag for the parts of one file that also follows the caller's flag (which it never sets): one
    part failing stops its siblings, not the other files' downloads."""

    def __init__(self, outer: threading.Event) -> None:
        self.outer, self.own = outer, threading.Event()

    def is_set(self) -> bool:
        return self.own.is_set() or self.outer.is_set()

    def set(self) -> None:
        self.own.set()


def _fetch_part(
    url: str,
    part: _Part,
    validator: str | None,
    policy: RetryPolicy,
    on_bytes: Callable[[int], None],
    hasher: BackgroundHash | None,
    stop: _Stop,
    ranges: bool,
) -> int:
    """Fill ``part`` from the server; returns the bytes received. Raises DownloadError or _Restart."""
    received = 0
    attempt = 0
    while True:
        have = part.have()
        if part.end is not None and have >= part.end - part.start:
            return received
        offset = part.start + have
        headers: dict[str, str] = {}
        if offset > 0 or part.ranged:
            if not ranges:
                raise _Restart()
            end = "" if part.end is None else str(part.end - 1)
            headers["Range"] = f"bytes={offset}-{end}"
            if validator:
                headers["If-Range"] = validator
        progress_before = received
        try:
            with urllib.request.urlopen(_request(url, headers=headers), timeout=policy.timeout) as resp:
                if "Range" in headers:
                    if resp.status != 206:
                        raise _Restart()
                    got_start = _content_range(resp.headers.get("Content-Range", ""))[0]
                    if got_start != offset:
                        raise http.client.HTTPException(f"asked for byte {offset}, the server sent from {got_start}")
                with open(part.path, "ab") as f:
                    limit = None if part.end is None else part.end - offset
                    while limit is None or limit > 0:
                        if stop.is_set():
                            raise DownloadError("stopped")
                        # read1: what the socket has (up to CHUNK), written at once, so a kill loses nothing
                        block = resp.read1(CHUNK if limit is None else min(CHUNK, limit))
                        if not block:
                            break
                        f.write(block)
                        if hasher is not None:
                            hasher.feed(block)
                        received += len(block)
                        on_bytes(len(block))
                        if limit is not None:
                            limit -= len(block)
            if part.end is None:
                return received
            if part.have() < part.end - part.start:
                raise http.client.IncompleteRead(b"", part.end - part.start - part.have())
        except (_Restart, DownloadError):
            raise
        except Exception as err:
            if not _retryable(err):
                raise DownloadError(f"{url}: {_describe(err)}") from None
            attempt = 0 if received > progress_before else attempt + 1
            if attempt > policy.retries:
                raise DownloadError(f"{url}: {_describe(err)} (gave up after {attempt} attempts)") from None
            if stop.is_set():
                raise DownloadError("stopped") from None
            delay = policy.wait(max(attempt, 1))
            log.warning("%s: %s at byte %d; resuming in %.1f s", url, _describe(err), part.start + part.have(), delay)
            time.sleep(delay)


def _plan_parts(size: int | None, ranges: bool, connections: int, min_part_size: int) -> list[list[int | None]]:
    if size is None or not ranges or connections <= 1 or size < 2 * min_part_size:
        return [[0, size]]
    count = min(connections, max(1, size // max(1, min_part_size)))
    bounds = [size * k // count for k in range(count + 1)]
    return [[bounds[k], bounds[k + 1]] for k in range(count)]


def part_files(dest: Path) -> list[Path]:
    """The plan and part files of ``dest`` that exist."""
    return sorted(dest.parent.glob(f"{dest.name}.part*"))


def partial_bytes(dest: Path) -> int:
    """Bytes of ``dest`` already downloaded into its part files."""
    return sum(p.stat().st_size for p in part_files(dest) if not p.name.endswith(".json"))


def discard_parts(dest: Path) -> None:
    for path in part_files(dest):
        path.unlink(missing_ok=True)


def _load_plan(dest: Path, url_path: str, info: RemoteInfo) -> dict[str, Any] | None:
    path = dest.with_name(dest.name + ".part.json")
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = plan.get("url_path") == url_path and plan.get("size") == info.size and plan.get("ranges") == info.ranges
    if not same or (info.validator and plan.get("validator") and plan["validator"] != info.validator):
        return None
    return plan


class _HashFollower(threading.Thread):
    """Hash the part files in order while they are being written (like ``tail -f``): part k is read as its bytes
    land, once parts 0..k-1 are hashed, so the checksum is ready soon after the last byte arrives."""

    def __init__(self, parts: list[_Part], hasher: BackgroundHash) -> None:
        super().__init__(name="download-hash-follow", daemon=True)
        self.parts, self.hasher = parts, hasher
        self.done = threading.Event()  # every part is complete (or the download failed)
        self.cancelled = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for part in self.parts:
                self._follow(part)
                if self.cancelled:
                    return
        except OSError as err:
            self.error = err

    def _follow(self, part: _Part) -> None:
        assert part.end is not None  # ranged parts have bounds
        left = part.end - part.start
        while not part.path.exists():
            if self.done.wait(0.01) and (self.cancelled or not part.path.exists()):
                return
        with open(part.path, "rb") as f:
            while left > 0 and not self.cancelled:
                block = f.read(min(CHUNK, left))
                if block:
                    self.hasher.feed(block)
                    left -= len(block)
                elif self.done.is_set():
                    if not f.read(1):  # complete or failed: nothing more will come
                        return
                    f.seek(-1, os.SEEK_CUR)
                else:
                    time.sleep(0.005)

    def finish(self, cancel: bool) -> None:
        self.cancelled = cancel
        self.done.set()
        self.join()


def _append(src: Any, dst: Any, count: int) -> None:
    """Append ``count`` bytes of ``src`` to ``dst`` (kernel copy where the OS has one)."""
    dst.flush()
    try:
        while count > 0:
            n = os.copy_file_range(src.fileno(), dst.fileno(), min(count, 1 << 30))
            if n == 0:
                break
            count -= n
        return
    except (AttributeError, OSError):  # no copy_file_range here (or across filesystems): copy in user space
        pass
    while count > 0 and (block := src.read(min(CHUNK, count))):
        dst.write(block)
        count -= len(block)


def _run_parts(
    url: str,
    parts: list[_Part],
    info: RemoteInfo,
    policy: RetryPolicy,
    on_bytes: Callable[[int], None],
    hasher: BackgroundHash | None,
    stop: _Stop,
) -> tuple[list[int], list[BaseException]]:
    """Fetch every part, part 0 on this thread and the others on their own; (bytes per part, errors)."""
    received = [0] * len(parts)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            received[k] = _fetch_part(
                url, parts[k], info.validator, policy, on_bytes, hasher if k == 0 else None, stop, info.ranges
            )
        except BaseException as err:  # handed to the caller
            errors.append(err)
            if not isinstance(err, _Restart):
                stop.set()

    threads = [threading.Thread(target=run, args=(k,), name=f"download-part{k}") for k in range(1, len(parts))]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    return received, errors


def fetch(
    url: str,
    dest: Path,
    info: RemoteInfo,
    *,
    url_path: str,
    algorithm: str | None,
    connections: int = 1,
    min_part_size: int = 64 << 20,
    policy: RetryPolicy | None = None,
    on_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> FetchResult:
    """Download ``url`` into ``dest`` (resuming what part files hold), hashing by ``algorithm`` on the way.

    ``info``: from :func:`probe`; ``url_path`` identifies the file in the plan (so a mirror with the same
    files resumes what another started). Raises DownloadError.
    """
    policy = policy or RetryPolicy()
    on_bytes = on_bytes or (lambda n: None)
    stop = stop or threading.Event()
    lock = threading.Lock()
    restarted = False

    def counted(n: int) -> None:
        with lock:
            on_bytes(n)

    while True:
        plan = _load_plan(dest, url_path, info)
        if plan is None:
            discard_parts(dest)
            plan = {
                "url_path": url_path,
                "size": info.size,
                "ranges": info.ranges,
                "validator": info.validator,
                "parts": _plan_parts(info.size, info.ranges, connections, min_part_size),
            }
            atomic_write_json(dest.with_name(dest.name + ".part.json"), plan, fsync=False)
        ranged = len(plan["parts"]) > 1
        parts = [_Part(dest.with_name(f"{dest.name}.part{k}"), s, e, ranged) for k, (s, e) in enumerate(plan["parts"])]
        resumed = sum(p.have() for p in parts)
        hashable = algorithm and (info.size is not None or algorithm != "git-blob-sha1")
        hasher = BackgroundHash(algorithm, info.size) if hashable else None
        follower = None
        if hasher is not None and ranged:  # parts arrive out of order: hash them in order, following the files
            follower = _HashFollower(parts, hasher)
            follower.start()
        elif hasher is not None:  # one stream: hashed as it arrives, a resumed prefix first
            hasher.feed_file(parts[0].path, parts[0].have())
        received, errors = _run_parts(url, parts, info, policy, counted, None if ranged else hasher, _Stop(stop))
        if follower is not None:
            follower.finish(cancel=bool(errors))
        if errors:
            if hasher is not None:
                hasher.abandon()
            if all(isinstance(e, _Restart) for e in errors) and not restarted:
                log.warning("%s: the server did not resume (no Range support, or the file changed); restarting", url)
                discard_parts(dest)
                restarted = True
                info = RemoteInfo(info.size, False, None)
                continue
            real = next((e for e in errors if not isinstance(e, _Restart)), errors[0])
            if isinstance(real, _Restart):
                raise DownloadError(f"{url}: the server does not resume downloads") from None
            raise real
        break
    if follower is not None and follower.error is not None:
        hasher.abandon()
        raise DownloadError(f"{dest.name}: cannot read the parts back ({follower.error})")
    first = parts[0].path
    first.touch(exist_ok=True)  # an empty file has no part written
    with open(first, "r+b") as out:  # not O_APPEND: copy_file_range refuses an appending target
        out.seek(0, os.SEEK_END)
        for part in parts[1:]:
            with open(part.path, "rb") as f:
                _append(f, out, part.end - part.start)
    size = first.stat().st_size
    if info.size is not None and size != info.size:
        discard_parts(dest)
        raise DownloadError(f"{url}: got {size} bytes, the server announced {info.size}")
    digest = hasher.hexdigest() if hasher is not None else None
    first.replace(dest)
    discard_parts(dest)
    with contextlib.suppress(OSError):
        dest.with_name(dest.name + ".part.json").unlink()
    return FetchResult(fetched=sum(received), resumed_from=resumed, size=size, digest=digest)
