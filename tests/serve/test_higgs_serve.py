"""`tunesmith serve` for a speech model (HiggsAudio v2, tiny random): the app in process (validation, a voice
reference as base64, the same audio as the generator for the same seed, micro-batching) and the real command."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from support.tts import make_higgs_dir  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
KEY = "speech-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def higgs_dir(tmp_path_factory):
    return make_higgs_dir(tmp_path_factory.mktemp("serve-higgs") / "model")


@pytest.fixture(scope="module")
def generator(higgs_dir):
    from tunesmith.inference.higgs import HiggsGenerator

    return HiggsGenerator.from_path(higgs_dir, device="cpu", precision="fp32")


def _wav_base64(rate: int = 16000, seconds: float = 0.4) -> str:
    t = np.arange(int(rate * seconds)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def client(generator):
    from fastapi.testclient import TestClient

    from tunesmith.serve.higgs import build_speech_app
    from tunesmith.serve.queue import Limits

    with TestClient(build_speech_app(generator, Limits(max_duration=2.0), api_key=KEY, name="tiny")) as c:
        yield c


def _post(client, body):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/v1/generate", content=content, headers={**AUTH, "Content-Type": "application/json"})


def test_generate_with_a_base64_reference_equals_the_generator(client, generator):
    body = {"text": "Hello there.", "reference": _wav_base64(), "reference_text": "She sells.", "speaker": "anna",
            "seed": 11, "duration": 0.4, "temperature": 0.9, "top_k": 20}  # fmt: skip
    response = _post(client, body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav" and response.headers["x-seed"] == "11"
    served, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 24000
    item = {"prompt": "Hello there.", "reference": base64.b64decode(body["reference"]), "reference_text": "She sells.",
            "seed": 11, "duration": 0.4, "temperature": 0.9, "top_k": 20}  # fmt: skip
    direct = generator.generate([item])[0]
    expected = np.rint(np.clip(direct.wav[0], -1, 1) * 32767) / 32768  # 16-bit, as served
    assert served.shape == expected.shape and np.allclose(served, expected, atol=1e-6)
    flac = _post(client, {"text": "Hi.", "format": "flac", "seed": 1, "duration": 0.2})
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac"
    info = client.get("/v1/model", headers=AUTH).json()
    assert info["family"] == "higgs_audio_v2" and info["sample_rate"] == 24000 and info["num_codebooks"] == 4
    assert client.get("/v1/model").status_code == 401


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "text", "Field required"),
        ({"text": "   "}, "text", "empty"),
        ({"text": 3}, "text", "valid string"),
        ({"text": "a", "prompt": "b"}, "text", "not both"),
        ({"text": "a", "reference": "%%%"}, "reference", "base64"),
        (
            {"text": "a", "reference": base64.b64encode(b"no audio").decode(), "reference_text": "b"},
            "reference",
            "readable",
        ),
        ({"text": "a", "reference": _wav_base64()}, "reference_text", "needs its transcript"),
        ({"text": "a", "reference": _wav_base64(8000, 61), "reference_text": "b"}, "reference", "at most 60 s"),
        ({"text": "a", "reference_text": "b"}, "reference", "without a reference clip"),
        ({"text": "a", "temperature": -1}, "temperature", "greater than or equal to 0"),
        ({"text": "a", "duration": 9}, "duration", "less than or equal to 2"),
        ({"text": "a", "genre": "rock"}, "genre", "not conditioned"),
        ({"text": "a", "volume": 3}, "volume", "Extra inputs"),
        ({"text": "a", "format": "mp3"}, "format", "'wav' or 'flac'"),
    ],
)
def test_bad_requests_are_422_naming_the_field(client, body, field, words):
    response = _post(client, body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["field"] == field and words in d["message"] for d in detail), detail


def test_body_that_is_not_json_is_422(client):
    response = _post(client, b"{not json")
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]
    response = _post(client, "[1, 2]")
    assert response.status_code == 422 and "expected a JSON object" in response.json()["error"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def speech_server(higgs_dir, tmp_path_factory):
    """`tunesmith serve` on the HiggsAudio folder in a real process, keyed; yields (url, log path)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    command = [sys.executable, "-m", "tunesmith", "--threads", "1", "serve", str(higgs_dir), "--port", str(port),
               "--device", "cpu", "--max-duration", "1"]  # fmt: skip
    out = open(log, "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "TUNESMITH_NO_PROGRESS": "1", "TUNESMITH_API_KEY": KEY})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def test_the_serve_command_dispatches_speech_models(speech_server):
    url, log = speech_server
    response = httpx.post(url + "/v1/generate", json={"text": "Hello.", "seed": 2, "duration": 0.3}, headers=AUTH,
                          timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text
    assert sf.read(io.BytesIO(response.content))[1] == 24000
    too_long = httpx.post(url + "/v1/generate", json={"text": "a", "duration": 5}, headers=AUTH, timeout=60)
    assert too_long.status_code == 422 and "duration" in too_long.json()["error"]
    assert "speech model" in log.read_text()
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 401 and 'name="key"' in page.text  # the sign-in form, nothing about the model


_SPEAK = """
const done = arguments[arguments.length - 1];
const $ = id => document.getElementById(id);
const player = $('player');
const report = () => done({duration: player.duration, error: player.error ? player.error.code : null,
  src: player.currentSrc, download: $('download').download, info: $('info').textContent,
  problem: $('error').textContent});
$('go').click();
let loading = false;
const timer = setInterval(() => {
  if ($('error').textContent) { clearInterval(timer); report(); return; }
  if (!player.src.startsWith('blob:')) return;
  if (player.readyState >= 1 || player.error) { clearInterval(timer); report(); return; }
  if (!loading) { loading = true; player.load(); }
}, 100);
"""


@pytest.mark.slow
def test_web_page_speaks_with_a_reference_in_headless_chromium(speech_server, tmp_path):
    import shutil

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from support.browser import headless_chromium

    url, _ = speech_server
    reference = tmp_path / "voice.wav"
    sf.write(reference, (0.3 * np.sin(np.arange(8000) / 5.0)).astype(np.float32), 16000)
    driver, profile = headless_chromium()
    try:
        driver.set_script_timeout(90)
        driver.get(f"{url}/?key={KEY}")
        assert driver.current_url == url + "/"  # redirected: the key left the address bar
        go = driver.find_element(By.ID, "go")
        WebDriverWait(driver, 30).until(lambda d: go.is_enabled())  # /v1/model read
        driver.find_element(By.ID, "text").send_keys("Hello there.")
        driver.find_element(By.ID, "reference").send_keys(str(reference))
        driver.find_element(By.ID, "reference_text").send_keys("She sells.")
        for field, value in (("duration", "0.4"), ("seed", "7")):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        spoken = driver.execute_async_script(_SPEAK)
        assert spoken["error"] is None and spoken["problem"] == "", spoken
        assert spoken["src"].startswith("blob:") and spoken["download"] == "tunesmith-speech-seed-7.wav"
        assert "seed 7" in spoken["info"] and spoken["duration"] > 0
        driver.find_element(By.ID, "reference").clear()  # a transcript without a clip: the server's 422 is shown
        problem = driver.execute_async_script(_SPEAK)["problem"]
        assert "reference_text was given without a reference clip" in problem
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "422" not in e["message"]]
        assert not severe, severe
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
