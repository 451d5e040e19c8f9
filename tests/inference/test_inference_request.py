"""The one request schema: a bad value gets the same message from a prompts file line and from the HTTP API,
and every surface (CLI flags, prompts files, GenerationItem, the server) starts from the same defaults."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunesmith.inference.defaults import generation_defaults
from tunesmith.inference.prompts import read_prompts
from tunesmith.inference.request import DEFAULTS, FIELDS, HTTP, GenerationItem, RequestError, parse_item, validate

BAD = [
    ({"duration": -1}, "Input should be greater than 0"),
    ({"duration": float("nan")}, "Input should be a finite number"),
    ({"cfg": "high"}, "Input should be a valid number"),
    ({"cfg": -0.5}, "Input should be greater than or equal to 0"),
    ({"temperature": True}, "Input should be a valid number"),
    ({"top_k": 2.5}, "Input should be a valid integer"),
    ({"top_k": -1}, "Input should be greater than or equal to 0"),
    ({"top_p": 1.5}, "Input should be less than or equal to 1"),
    ({"seed": -1}, "Input should be greater than or equal to 0"),
    ({"seed": "7"}, "Input should be a valid integer"),
    ({"prompt": 5}, "Input should be a valid string"),
    ({"genre": 5}, "Input should be a valid string or a list of strings"),
    ({"bpm": 0}, "Input should be greater than 0"),
    ({"key": "k" * 41}, "String should have at most 40 characters"),
]


def _fake_generator() -> SimpleNamespace:
    """What build_app reads before a request reaches the queue (validation never generates)."""
    return SimpleNamespace(config={}, model=SimpleNamespace(conditioner=None), max_batch=1)


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from tunesmith.serve.app import build_app
    from tunesmith.serve.queue import Limits

    return TestClient(build_app(_fake_generator(), Limits(), docs=True))


def _file_problem(tmp_path: Path, line: dict) -> str:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(line) + "\n")
    jobs, problems = read_prompts([], path, dict(DEFAULTS))
    assert not jobs and len(problems) == 1
    assert problems[0].startswith(f"{path}:1: ")  # file:line: message
    return problems[0]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[next(iter(b)) + str(i) for i, (b, _) in enumerate(BAD)])
def test_same_bad_value_same_message_in_a_prompts_file_and_over_http(tmp_path, client, body, message):
    (name,) = body
    with pytest.raises(RequestError) as raised:
        validate(body)
    assert [e.message for e in raised.value.errors] == [message]
    assert f": {message}" in _file_problem(tmp_path, body) and f"{name}=" in _file_problem(tmp_path, body)
    response = client.post("/v1/generate", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    payload = response.json()
    assert payload["error"].startswith(f"{name}: {message}")
    assert [d["field"] for d in payload["detail"]] == [name] and payload["detail"][0]["message"].startswith(message)


def test_unknown_fields_and_the_surfaces_differences(client):
    with pytest.raises(RequestError, match=r"unknown field\(s\) \['format'\]"):
        parse_item({"prompt": "x", "format": "wav"})  # format is the server's
    extra = client.post("/v1/generate", json={"text": "x"}).json()
    assert extra["error"] == "text: Extra inputs are not permitted (got 'x')"  # text / conditions: prompts files
    assert parse_item({"text": "x", "moods": ["calm"]}).conditions == {"moods": ["calm"]}
    assert validate({}, surface=HTTP)["seed"] is None  # the server draws a random seed (X-Seed)
    assert validate({"seed": None}, {"seed": 4})["seed"] == 4  # null means the default


def test_defaults_are_the_same_everywhere():
    from tunesmith.cli import build_parser
    from tunesmith.serve.app import model_defaults
    from tunesmith.serve.queue import Limits

    settings = dict(DEFAULTS)
    item = GenerationItem()
    assert (
        {k: getattr(item, k) for k in settings} == settings == {f.name: f.default for f in FIELDS if f.name in settings}
    )
    assert {k: getattr(parse_item({}), k) for k in settings} == settings
    http = validate({}, surface=HTTP)
    assert {k: http[k] for k in settings if k != "seed"} == {k: v for k, v in settings.items() if k != "seed"}
    served = model_defaults(_fake_generator(), Limits(max_duration=60.0))
    assert {k: served[k] for k in served if k != "format"} == {k: v for k, v in settings.items() if k != "seed"}
    family, origin = generation_defaults({})  # a model without stored settings: the family's = the schema's
    assert family == {k: v for k, v in settings.items() if k != "prompt"} and origin == "the lm family's defaults"
    args = build_parser().parse_args(["generate", "MODEL", "--out", "o"])
    assert all(getattr(args, k) is None for k in settings if k != "prompt")  # unset flags: the model's defaults


def test_one_source_of_defaults_the_run_then_the_family():
    from tunesmith.serve.app import model_defaults
    from tunesmith.serve.queue import Limits

    stored = {"generate": {"duration": 4.0, "top_k": 50, "cfg": 2.5, "seed": 7, "num_samples": 3, "prompts": []}}
    settings, origin = generation_defaults(stored)
    assert origin == "the run's generate settings"
    assert settings == {"duration": 4.0, "cfg": 2.5, "temperature": 1.0, "top_k": 50, "top_p": 0.0, "seed": 7}
    fake = _fake_generator()
    fake.config = stored
    served = model_defaults(fake, Limits(max_duration=3.0))
    assert served["duration"] == 3.0 and served["top_k"] == 50 and served["cfg"] == 2.5  # within the limits
    from tunesmith.review.lm_samples import generation_defaults as review_defaults

    assert review_defaults(stored, None) == settings and review_defaults(stored, 0.5)["duration"] == 0.5
    damaged = generation_defaults({"generate": {"top_k": "many", "duration": 0}})
    assert damaged == generation_defaults({})


def test_http_limits_cap_the_schema_ranges(client):
    from tunesmith.serve.queue import Limits

    limits = Limits(max_duration=2.0, max_prompt_chars=10)
    with pytest.raises(RequestError) as raised:
        validate({"duration": 2.5, "prompt": "x" * 11, "top_p": 2}, surface=HTTP, limits=limits)
    assert [e.message for e in raised.value.errors] == [
        "String should have at most 10 characters",
        "Input should be less than or equal to 2",
        "Input should be less than or equal to 1",
    ]
    assert parse_item({"duration": 2.5, "prompt": "x" * 11}).duration == 2.5  # no server limits in files
    schema = client.get("/openapi.json").json()["paths"]["/v1/generate"]["post"]["requestBody"]
    props = schema["content"]["application/json"]["schema"]["properties"]
    assert props["duration"]["maximum"] == Limits().max_duration and props["top_p"]["maximum"] == 1
