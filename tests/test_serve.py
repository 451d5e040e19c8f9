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

from test_lm_fixtures import CODEC_RATE, make_codec_dir, make_lm_dir  # noqa: E402

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


def test_health_is_open_and_the_rest_needs_the_key(server):
    health = server.health()
    assert health["status"] == "ok" and health["queued"] == 0
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

    before = server.health()
    start = time.perf_counter()
    responses = asyncio.run(main())
    elapsed = time.perf_counter() - start
    failures = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert not failures and len(responses) == 64
    for response in responses:
        assert _audio(response)[0].shape == (800, 1)
    assert elapsed < 120, f"64 requests took {elapsed:.1f} s"
    after = server.health()
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
        health = srv.health()
        if condition(health):
            return health
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout} s; health: {srv.health()}")


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
