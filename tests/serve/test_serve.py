"""`tunesmith serve`: a real uvicorn process on 127.0.0.1, spoken to over HTTP (httpx and raw sockets)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from support.lm import CODEC_RATE, make_codec_dir, make_lm_dir  # noqa: E402

HOST = "127.0.0.1"
KEY = "s3cret-key"
FRAME_RATE = 200  # the fixture codec: 8 kHz, hop 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """A `tunesmith serve` subprocess; ``url`` once /health answers."""

    def __init__(self, model: Path, *args: str, env: dict | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = Path(model).parent / f"serve-{self.port}.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115 (closed in stop)
        command = [sys.executable, "-m", "tunesmith", "serve", str(model), "--host", HOST, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TUNESMITH_NO_PROGRESS": "1", **(env or {})},
        )

    def wait_ready(self, timeout: float = 120.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log.read_text()}")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def status(self) -> dict:
        """The queue counters (behind the key; the key is ignored by servers without one)."""
        response = httpx.get(self.url + "/v1/status", headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    return make_lm_dir(root, make_codec_dir(root))


@pytest.fixture(scope="module")
def server(model_dir) -> Iterator[Server]:
    """Keyed server (key from the environment), batches of up to 8, room for 32 waiting requests."""
    srv = Server(model_dir, "--max-batch", "8", "--max-queue", "32", "--batch-wait-ms", "25", "--max-duration", "2",
                 env={"TUNESMITH_API_KEY": KEY})  # fmt: skip
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


AUTH = {"Authorization": f"Bearer {KEY}"}


def _post(srv: Server, body, headers=AUTH, **kwargs) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": "application/json", **headers}
    return httpx.post(srv.url + "/v1/generate", content=content, headers=headers, timeout=60, **kwargs)


def _audio(response: httpx.Response) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(io.BytesIO(response.content), dtype="float32", always_2d=True)
    return data, rate


# --------------------------------------------------------------------------- the basics


def test_model_loads_verified_before_the_port_opens(server):
    log = server.log.read_text()
    assert "loaded and verified" in log and "Uvicorn running" in log
    assert log.index("loaded and verified") < log.index("Uvicorn running")


def test_health_is_liveness_only_and_the_rest_needs_the_key(server, model_dir):
    assert server.health() == {"status": "ok"}  # nothing about the model (its path) without the key
    assert httpx.get(server.url + "/v1/status", timeout=10).status_code == 401
    status = server.status()
    assert status["status"] == "ok" and status["queued"] == 0 and status["model"] == str(model_dir)
    assert status["precision"] == "fp32"  # --precision auto on CPU
    for path in ("/docs", "/openapi.json", "/redoc"):  # off without --docs, with or without the key
        assert httpx.get(server.url + path, headers=AUTH, timeout=10).status_code == 404
    assert httpx.get(server.url + "/v1/model", timeout=10).status_code == 401
    assert httpx.get(server.url + "/v1/model", headers={"X-API-Key": "wrong"}, timeout=10).status_code == 401
    assert (
        httpx.get(server.url + "/v1/model", headers={"Authorization": "Bearer " + KEY[:-1]}, timeout=10).status_code
        == 401
    )
    info = httpx.get(server.url + "/v1/model", headers={"X-API-Key": KEY}, timeout=10).json()
    assert info["sample_rate"] == CODEC_RATE and info["frame_rate"] == FRAME_RATE and info["card"] == 32
    assert info["limits"]["max_duration"] == 2 and info["limits"]["max_batch"] == 8 and info["conditioning"]["text"]
    unauthorized = _post(server, {"prompt": "x", "duration": 0.05}, headers={})
    assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/nowhere", timeout=10).status_code == 404
    assert httpx.get(server.url + "/v1/generate", headers=AUTH, timeout=10).status_code == 405


def test_generate_wav_and_flac_reproducibly(server):
    body = {"prompt": "bright fast melody", "duration": 0.25, "seed": 11, "top_k": 8, "cfg": 2.5}
    first, second = _post(server, body), _post(server, body)
    assert first.status_code == 200 and first.headers["content-type"] == "audio/wav"
    assert first.content == second.content  # same seed, same audio
    data, rate = _audio(first)
    assert rate == CODEC_RATE and data.shape == (round(0.25 * FRAME_RATE) * CODEC_RATE // FRAME_RATE, 1)
    assert first.headers["x-seed"] == "11" and float(first.headers["x-audio-seconds"]) == pytest.approx(0.25)
    other = _post(server, {**body, "seed": 12})
    assert other.content != first.content
    flac = _post(server, {**body, "format": "flac"})
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac" and flac.content[:4] == b"fLaC"
    np.testing.assert_array_equal(_audio(flac)[0], data)  # lossless: the same 16-bit samples
    unseeded = _post(server, {"prompt": "calm soft pad", "duration": 0.1})
    seed = int(unseeded.headers["x-seed"])
    again = _post(server, {"prompt": "calm soft pad", "duration": 0.1, "seed": seed})
    assert unseeded.status_code == 200 and again.content == unseeded.content  # X-Seed reproduces a random draw


INVALID = [
    ({"duration": 0}, "duration"),
    ({"duration": -1.5}, "duration"),
    ({"duration": 2.5}, "duration: Input should be less than or equal to 2"),
    ('{"duration": NaN}', "duration: Input should be a finite number"),
    ('{"duration": Infinity}', "duration"),
    ({"duration": "long"}, "duration"),
    ({"prompt": "x" * 501}, "prompt: String should have at most 500 characters"),
    ({"prompt": 5}, "prompt: Input should be a valid string"),
    ({"cfg": -0.1}, "cfg"),
    ({"cfg": 21}, "cfg"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": 6}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 33}, "top_k: Input should be less than or equal to 32"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_k": True}, "top_k"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": -0.1}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"format": "mp3"}, "format"),
    ({"genre": "rock"}, "genre: this model is not conditioned on genre; it uses no attributes"),
    ({"bpm": 0}, "bpm: Input should be greater than 0"),
    ({"genre": 5}, "genre"),
    ({"prompt": "x", "durtion": 1}, "durtion: Extra inputs are not permitted"),
    ([1, 2], "body"),
    ("not json", "body: not valid JSON"),
    ("", "body"),
]


@pytest.mark.parametrize(("body", "expected"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_requests_get_422_with_a_message(server, body, expected):
    response = _post(server, body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert expected in payload["error"], payload
    assert payload["detail"] and all({"field", "message", "type"} <= set(d) for d in payload["detail"])


def test_16_clients_4_requests_each_all_succeed(server, capsys):
    prompts = ["bright fast melody", "dark slow drone", "noisy busy drums", "calm soft pad"]

    async def client(http: httpx.AsyncClient, c: int) -> list[httpx.Response]:
        out = []
        for r in range(4):
            body = {"prompt": prompts[(c + r) % 4], "duration": 0.1, "seed": 100 * c + r, "top_k": 8}
            out.append(await http.post("/v1/generate", json=body, headers=AUTH))
        return out

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as http:
            results = await asyncio.gather(*(client(http, c) for c in range(16)))
        return [r for rs in results for r in rs]

    before = server.status()
    start = time.perf_counter()
    responses = asyncio.run(main())
    elapsed = time.perf_counter() - start
    failures = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert not failures and len(responses) == 64
    for response in responses:
        assert _audio(response)[0].shape == (800, 1)
    assert elapsed < 120, f"64 requests took {elapsed:.1f} s"
    after = server.status()
    assert after["completed"] - before["completed"] == 64 and after["failed"] == 0
    batches = after["batches"] - before["batches"]
    assert batches < 64 and max(int(r.headers["x-batch-size"]) for r in responses) > 1  # requests were batched
    with capsys.disabled():
        print(f"\nserve: 16 clients × 4 requests in {elapsed:.2f} s = {64 / elapsed:.1f} requests/s, {batches} batches")


# --------------------------------------------------------------------------- attribute conditioning


def test_attribute_conditioned_model_takes_genre_and_bpm(tmp_path):
    """The fixture's data has genres pop/ambient/rock and bpm 90..120; the model conditions on both."""
    attr_model = make_lm_dir(tmp_path, make_codec_dir(tmp_path), attributes=["genre", "bpm"])
    srv = Server(attr_model).wait_ready()
    try:
        info = httpx.get(srv.url + "/v1/model", timeout=10).json()["conditioning"]
        assert info["attributes"] == ["genre", "bpm"]
        assert sorted(info["attribute_values"]["genre"]) == ["ambient", "pop", "rock"]
        assert info["attribute_values"]["bpm"] and all(v.startswith("bpm:") for v in info["attribute_values"]["bpm"])

        base = {"prompt": "bright fast melody", "duration": 0.25, "seed": 5, "top_k": 8}
        rock, rock_again = _post(srv, {**base, "genre": "Rock"}, headers={}), _post(srv, {**base, "genre": "rock"})
        ambient = _post(srv, {**base, "genre": ["ambient"], "bpm": 95})
        plain = _post(srv, base, headers={})
        assert {r.status_code for r in (rock, rock_again, ambient, plain)} == {200}
        assert rock.content == rock_again.content  # values are matched case-insensitively
        assert len({rock.content, ambient.content, plain.content}) == 3  # the attributes reach the model

        typo = _post(srv, {**base, "genre": "rok"}, headers={})
        assert typo.status_code == 422
        assert "genre: 'rok' is not one of the model's 3 genre values; did you mean 'rock'?" in typo.json()["error"]
        unused = _post(srv, {**base, "key": "a minor", "instrument": ["piano", "zither"]}, headers={})
        assert unused.status_code == 422 and unused.json()["error"].count("it uses genre, bpm") == 2
        assert {d["field"] for d in unused.json()["detail"]} == {"key", "instrument"}
    finally:
        srv.stop()


# --------------------------------------------------------------------------- queue limits and disconnects


def _raw_request(port: int, body: dict) -> socket.socket:
    """Send a POST on a raw socket and leave it open (closing it is the client disconnecting)."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection((HOST, port), timeout=30)
    head = (
        f"POST /v1/generate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def _wait_for(srv: Server, condition, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = srv.status()
        if condition(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout} s; status: {srv.status()}")


def test_full_queue_answers_503_and_disconnects_free_slots(model_dir):
    srv = Server(model_dir, "--max-batch", "1", "--max-queue", "1", "--max-duration", "300", "--batch-wait-ms", "0")
    try:
        srv.wait_ready()
        long_one = _raw_request(srv.port, {"prompt": "dark slow drone", "duration": 300, "seed": 1})
        _wait_for(srv, lambda h: h["running"] == 1)
        waiting = _raw_request(srv.port, {"prompt": "calm soft pad", "duration": 0.05, "seed": 2})
        _wait_for(srv, lambda h: h["queued"] == 1)

        full = _post(srv, {"prompt": "x", "duration": 0.05}, headers={})
        assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1 and "full" in full.json()["error"]

        waiting.close()  # a waiting client leaves: its slot is free at once, it is never generated
        health = _wait_for(srv, lambda h: h["queued"] == 0)
        assert health["cancelled"] == 1 and health["running"] == 1 and health["completed"] == 0
        replacement = _raw_request(srv.port, {"prompt": "noisy busy drums", "duration": 0.05, "seed": 3})
        _wait_for(srv, lambda h: h["queued"] == 1)

        long_one.close()  # the running client leaves: its batch stops at the next step, the next one runs
        health = _wait_for(srv, lambda h: h["completed"] == 1, timeout=30)
        assert health["aborted_batches"] == 1 and health["cancelled"] == 2 and health["rejected"] == 1
        replacement.settimeout(30)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += replacement.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200") and b"audio/wav" in reply
        replacement.close()
        assert _post(srv, {"prompt": "y", "duration": 0.05}, headers={}).status_code == 200  # no key configured
    finally:
        srv.stop()
    assert srv.proc.returncode in (0, 130)  # Ctrl-C: the CLI's "interrupted" code after a graceful shutdown
    assert "Application shutdown complete" in srv.log.read_text()


# --------------------------------------------------------------------------- refusing to start


def test_corrupt_model_is_refused_before_listening(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\xff\xff\xff\xff")
    srv = Server(broken)
    try:
        assert srv.proc.wait(120) == 2
    finally:
        srv.stop()
    log = srv.log.read_text()
    assert "checksum mismatch" in log and "model.safetensors" in log and "Uvicorn running" not in log
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + "/health", timeout=2)


def test_bad_arguments_are_user_errors(model_dir, capsys):
    from tunesmith.cli import main

    assert main(["serve", str(model_dir), "--max-batch", "0"]) == 2
    assert "--max-batch=0" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        assert main(["serve", str(model_dir), "--port", str(busy.getsockname()[1])]) == 2
    assert "pick another --port" in capsys.readouterr().err
    assert main(["serve", str(model_dir.parent / "missing")]) == 2


# --------------------------------------------------------------------------- docs, keys and the web page (in process)


def _fake_generator():
    from types import SimpleNamespace

    return SimpleNamespace(config={}, model=SimpleNamespace(conditioner=None), max_batch=1)


def test_docs_are_off_by_default_and_behind_the_key_with_docs():
    from fastapi.testclient import TestClient

    from tunesmith.serve.app import build_app
    from tunesmith.serve.queue import Limits

    off = TestClient(build_app(_fake_generator(), Limits(), api_key=KEY))
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert off.get(path, headers=AUTH).status_code == 404
    on = TestClient(build_app(_fake_generator(), Limits(), api_key=KEY, docs=True))
    for path in ("/docs", "/openapi.json"):
        assert on.get(path).status_code == 401 and on.get(path, headers={"X-API-Key": "nope"}).status_code == 401
        assert on.get(path, headers=AUTH).status_code == 200
    assert "/v1/generate" in on.get("/openapi.json", headers=AUTH).json()["paths"]
    open_docs = TestClient(build_app(_fake_generator(), Limits(), docs=True))  # no key configured: open
    assert open_docs.get("/openapi.json").status_code == 200


def test_web_page_needs_the_key_once_then_a_strict_cookie():
    from fastapi.testclient import TestClient

    from tunesmith.serve.app import build_app
    from tunesmith.serve.auth import COOKIE, page_token
    from tunesmith.serve.queue import Limits

    client = TestClient(build_app(_fake_generator(), Limits(), api_key=KEY, name="/secret/path/model"))
    signin = client.get("/")
    assert signin.status_code == 401 and 'name="key"' in signin.text and "/secret/path" not in signin.text
    assert client.get("/?key=wrong").status_code == 401 and COOKIE not in client.cookies
    assert client.post("/sign-in", data={"key": "wrong"}).status_code == 401
    opened = client.get(f"/?key={KEY}", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/"  # the key leaves the address bar
    cookie = opened.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and KEY not in opened.headers["set-cookie"]
    assert client.cookies[COOKIE] == page_token(KEY)
    page = client.get("/")
    assert page.status_code == 200 and "<audio" in page.text and 'id="download"' in page.text
    assert "://" not in page.text  # offline: no CDN, no external anything
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert client.get("/v1/status").status_code == 200  # the cookie opens the API for the page's scripts
    other = TestClient(build_app(_fake_generator(), Limits(), api_key=KEY))
    assert other.post("/sign-in", data={"key": KEY}, follow_redirects=False).status_code == 303
    other.cookies.clear()
    other.cookies.set(COOKIE, "forged")
    assert other.get("/v1/status").status_code == 401


@pytest.mark.parametrize("key", ["clé-secrète", "two words", "tab\tkey", "naïve"])
def test_a_key_no_request_could_send_is_refused_at_start_up(model_dir, key, capsys, monkeypatch):
    from tunesmith.cli import main
    from tunesmith.serve.app import build_app
    from tunesmith.serve.queue import Limits

    start = time.monotonic()
    assert main(["serve", str(model_dir), "--api-key", key, "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "--api-key: the API key contains" in err and "printable ASCII" in err
    monkeypatch.setenv("TUNESMITH_API_KEY", key)
    assert main(["serve", str(model_dir), "--port", str(_free_port())]) == 2
    assert "$TUNESMITH_API_KEY: the API key contains" in capsys.readouterr().err
    assert time.monotonic() - start < 30  # refused before the model is loaded
    from tunesmith.errors import UserError

    with pytest.raises(UserError, match="printable ASCII"):
        build_app(_fake_generator(), Limits(), api_key=key)


# --------------------------------------------------------------------------- slow clients and the connection limit


def _trickle_until_closed(socks: list[socket.socket], seconds: float, on_tick=None) -> dict[int, tuple[float, bytes]]:
    """Send one header line per socket every 0.2 s; → {index: (seconds until the server closed it, what it sent)}.

    Bounded by ``seconds`` and by 5 ticks per second. ``on_tick(tick)`` runs between rounds.
    """
    import select

    start = time.monotonic()
    closed: dict[int, tuple[float, bytes]] = {}
    replies = {i: b"" for i in range(len(socks))}
    for tick in range(int(seconds * 5)):
        if len(closed) == len(socks) or time.monotonic() - start > seconds:
            break
        for i, sock in enumerate(socks):
            if i not in closed:
                try:
                    sock.sendall(f"X-Slow-{tick}: {'a' * 8}\r\n".encode())
                except OSError:
                    closed[i] = (time.monotonic() - start, replies[i])
        open_socks = [s for i, s in enumerate(socks) if i not in closed]
        readable, _, _ = select.select(open_socks, [], [], 0.2)
        for sock in readable:
            i = socks.index(sock)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            replies[i] += data
            if not data:
                closed[i] = (time.monotonic() - start, replies[i])
        if on_tick is not None:
            on_tick(tick)
    return closed


def test_trickling_clients_are_closed_and_extra_connections_get_503(model_dir):
    read_timeout, limit = 2.0, 8
    srv = Server(model_dir, "--max-connections", str(limit), "--read-timeout", str(read_timeout),
                 "--timeout-keep-alive", "1")  # fmt: skip
    socks: list[socket.socket] = []
    try:
        srv.wait_ready()
        time.sleep(1.5)  # wait_ready's kept-alive probe connection times out (keep-alive 1 s)
        # 1. six clients trickle their headers forever; a normal request still works meanwhile
        for _ in range(6):
            sock = socket.create_connection((HOST, srv.port), timeout=5)
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n".encode())
            socks.append(sock)
        normal: list[int] = []

        def during(tick: int) -> None:
            if tick == 2:
                normal.append(httpx.get(srv.url + "/health", timeout=5).status_code)

        closed = _trickle_until_closed(socks, seconds=read_timeout + 4, on_tick=during)
        assert normal == [200]
        assert sorted(closed) == list(range(6)), f"still open after {read_timeout + 4} s: {closed}"
        for seconds, reply in closed.values():
            assert seconds <= read_timeout + 1.5 and reply.startswith(b"HTTP/1.1 408"), (seconds, reply[:80])
        socks.clear()
        with httpx.Client(timeout=5) as client:
            assert client.get(srv.url + "/health").status_code == 200

        # 2. the limit: `limit` silent connections are open; one more is answered 503 with a reason
        time.sleep(1.5)
        idle = [socket.create_connection((HOST, srv.port), timeout=5) for _ in range(limit)]
        socks.extend(idle)
        time.sleep(0.2)
        extra = httpx.get(srv.url + "/health", timeout=5, headers={"Connection": "close"})
        assert extra.status_code == 503 and int(extra.headers["retry-after"]) >= 1
        assert "too many connections" in extra.json()["error"] and str(limit) in extra.json()["error"]
        deadline = time.monotonic() + read_timeout + 3
        reopened = None
        for _ in range(50):  # the silent connections are closed by the read timeout, then requests pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            response = httpx.get(srv.url + "/health", timeout=5, headers={"Connection": "close"})
            if response.status_code == 200:
                reopened = time.monotonic()
                break
        assert reopened is not None, "the silent connections were never closed"
        for sock in idle:
            sock.settimeout(1)
            assert sock.recv(65536).startswith(b"HTTP/1.1 408")
        assert "Uvicorn running" in srv.log.read_text()
    finally:
        for sock in socks:
            sock.close()
        srv.stop()


# --------------------------------------------------------------------------- the web page in a real browser

_PLAY = """
const done = arguments[arguments.length - 1];
const $ = id => document.getElementById(id);
const player = $('player');
const report = () => done({duration: player.duration, error: player.error ? player.error.code : null,
  src: player.currentSrc, download: $('download').download, href: $('download').href,
  info: $('info').textContent, problem: $('error').textContent});
$('go').click();
let loading = false;
const timer = setInterval(() => {  // the script timeout bounds it
  if ($('error').textContent) { clearInterval(timer); report(); return; }
  if (!player.src.startsWith('blob:')) return;
  if (player.readyState >= 1 || player.error) { clearInterval(timer); report(); return; }
  if (!loading) { loading = true; player.load(); }
}, 100);
"""


@pytest.mark.slow
def test_web_page_generates_and_plays_in_headless_chromium(tmp_path):
    import shutil

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from support.browser import headless_chromium

    attr_model = make_lm_dir(tmp_path, make_codec_dir(tmp_path), attributes=["genre", "bpm"])
    srv = Server(attr_model, env={"TUNESMITH_API_KEY": KEY}).wait_ready()
    driver, profile = headless_chromium()
    try:
        driver.set_script_timeout(60)
        driver.get(srv.url + "/")
        assert driver.find_elements(By.NAME, "key")  # without the key: only the sign-in form
        signin_log = driver.get_log("browser")  # (read, so that it is cleared)
        assert all("401" in e["message"] for e in signin_log if e["level"] == "SEVERE"), signin_log
        driver.get(f"{srv.url}/?key={KEY}")
        assert driver.current_url == srv.url + "/"  # redirected: the key is not left in the address bar
        go = driver.find_element(By.ID, "go")
        WebDriverWait(driver, 30).until(lambda d: go.is_enabled())  # /v1/model read
        genre = Select(driver.find_element(By.ID, "attr-genre"))
        assert sorted(o.text for o in genre.options) == ["(any)", "ambient", "pop", "rock"]
        genre.select_by_value("rock")
        driver.find_element(By.ID, "attr-bpm").send_keys("100")
        driver.find_element(By.ID, "prompt").send_keys("bright fast melody")
        for field, value in (("duration", "0.25"), ("seed", "5"), ("cfg", "2")):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        played = driver.execute_async_script(_PLAY)
        assert played["error"] is None and played["problem"] == "", played
        assert played["duration"] == pytest.approx(0.25, abs=0.01) and played["src"].startswith("blob:")
        assert played["href"] == played["src"] and played["download"] == "tunesmith-seed-5.wav"
        assert "seed 5" in played["info"]
        WebDriverWait(driver, 10).until(lambda d: "1 done" in d.find_element(By.ID, "queue").text)
        status = srv.status()  # the page's request went through the same queue as the API's
        assert status["completed"] == 1 and status["failed"] == 0
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        srv.stop()
