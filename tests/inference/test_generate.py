"""Generation: seeds, batching, audio prompts, the Generator loader and `tunesmith generate` (kill and rerun)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from support.lm import CODEC_RATE, make_codec_dir, make_lm_dir
from tunesmith.errors import UserError
from tunesmith.inference.lm import Generator
from tunesmith.inference.request import parse_item
from tunesmith.models.lm.generation import generate_codes

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    codec = make_codec_dir(root)
    return make_lm_dir(root, codec)


@pytest.fixture(scope="module")
def generator(model_dir):
    return Generator.from_path(model_dir)


def test_same_seed_same_audio_and_batch_does_not_matter(generator):
    item = {"prompt": "bright fast melody", "seed": 7, "duration": 0.1, "top_k": 10}
    a, b = generator.generate([item]), generator.generate([item])
    assert a[0].wav.dtype == np.float32 and a[0].wav.shape == (1, int(0.1 * CODEC_RATE))
    assert np.array_equal(a[0].codes, b[0].codes) and np.array_equal(a[0].wav, b[0].wav)
    other = generator.generate([{**item, "seed": 8}])
    assert not np.array_equal(other[0].codes, a[0].codes)
    batch = generator.generate([{**item, "seed": 8}, item, {**item, "prompt": "dark slow drone", "seed": 1}])
    assert batch[1].stats["batch_size"] == 3
    assert np.array_equal(batch[1].codes, a[0].codes)  # its own seed, wherever it sits in a batch
    assert np.array_equal(batch[0].codes, other[0].codes)
    assert batch[0].stats["real_time_factor"] > 0 and batch[0].sample_rate == CODEC_RATE


def test_items_with_other_settings_are_batched_apart(generator):
    items = [{"prompt": "a", "duration": 0.05}, {"prompt": "b", "duration": 0.1}, {"prompt": "c", "duration": 0.05}]
    results = generator.generate(items)
    assert [r.item.prompt for r in results] == ["a", "b", "c"]
    assert [r.wav.shape[-1] for r in results] == [400, 800, 400]
    assert [r.stats["batch_size"] for r in results] == [2, 1, 2]


def test_audio_prompt_is_continued(generator):
    prompt_wav = np.sin(np.linspace(0, 200, 400, dtype=np.float32))[None] * 0.5  # 0.05 s = 10 frames
    prompt_codes = generator.codec.encode(torch.from_numpy(prompt_wav)[None])
    result = generator.generate([{"prompt": "calm soft pad", "duration": 0.1}], prompt_wavs=[prompt_wav])[0]
    assert result.codes.shape == (2, 20)
    assert np.array_equal(result.codes[:, :10], prompt_codes[0].numpy())


def _first_step_logits(monkeypatch, model, conditions, cfg_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(greedy codes of 6 frames, the mixed logits [K, card] the first step sampled from)."""
    import tunesmith.models.lm.generation as generation

    seen: list[torch.Tensor] = []
    real = generation.sample_next

    def spy(logits, *args, **kwargs):
        seen.append(logits.clone())
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(generation, "sample_next", spy)
    codes = generate_codes(model, conditions, 6, cfg_coef=cfg_coef, temperature=0.0)
    monkeypatch.setattr(generation, "sample_next", real)
    return codes, seen[0]


def test_unconditional_and_guidance_paths(generator, monkeypatch):
    model = generator.model
    uncond = generate_codes(model, None, 6, cfg_coef=3.0, temperature=0.0, batch_size=2)
    assert uncond.shape == (2, 2, 6)
    assert torch.equal(uncond[0], uncond[1])  # greedy, no condition: identical rows
    text = [{"description": "dark slow drone"}]
    plain, cond_logits = _first_step_logits(monkeypatch, model, text, 1.0)
    _, null_logits = _first_step_logits(monkeypatch, model, [{}], 1.0)  # the null condition CFG mixes in
    guided, guided_logits = _first_step_logits(monkeypatch, model, text, 3.0)
    assert not torch.equal(cond_logits, null_logits)  # the text reaches the model
    expected = null_logits + 3.0 * (cond_logits - null_logits)  # uncond + cfg · (cond − uncond), by hand
    torch.testing.assert_close(guided_logits, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(guided_logits, cond_logits, rtol=0, atol=1e-5)
    assert not torch.equal(guided, plain)  # guidance changes the greedy codes
    again, _ = _first_step_logits(monkeypatch, model, text, 3.0)
    assert torch.equal(again, guided)
    with pytest.raises(ValueError, match="top_p"):
        generate_codes(model, None, 4, top_p=2.0)


def test_half_precision_stays_close_to_fp32(model_dir, generator):
    """bf16 on CPU (what fp16/bf16 do on a GPU): teacher-forced logits within 5 % relative L2 of fp32,
    greedy codes ≥ 90 % equal, sampled audio finite. bf16 keeps 8 mantissa bits (~0.4 % per rounding)."""
    half = Generator.from_path(model_dir, precision="bf16")
    assert half.precision == "bf16" and next(half.model.parameters()).dtype == torch.bfloat16
    assert generator.precision == "fp32" and Generator.from_path(model_dir, precision="auto").precision == "fp32"
    codes = torch.randint(0, generator.model.card, (2, 2, 40), generator=torch.Generator().manual_seed(0))
    conditions = [{"description": "dark slow drone"}, {"description": "bright fast melody"}]
    with torch.inference_mode():
        full = generator.model(codes, conditions).float()
        low = half.model(codes, conditions).float()
    assert torch.isfinite(low).all()
    assert float((low - full).norm() / full.norm()) < 0.05
    greedy = {"prompt": "dark slow drone", "seed": 3, "duration": 0.25, "temperature": 0.0}
    a, b = generator.generate([greedy])[0], half.generate([greedy])[0]
    assert a.codes.shape == b.codes.shape and (a.codes == b.codes).mean() >= 0.9
    sampled = half.generate([{**greedy, "temperature": 1.0, "duration": 1.0, "top_k": 0}])[0]
    assert sampled.wav.shape == (1, CODEC_RATE) and np.isfinite(sampled.wav).all() and np.isfinite(sampled.codes).all()
    with pytest.raises(UserError, match="--precision=fp8"):
        Generator.from_path(model_dir, precision="fp8")


def test_a_duration_that_cannot_fit_is_refused_at_once(generator, monkeypatch):
    """`generate --duration 1e12` used to try to allocate petabytes. Prompt files and flags now stop at
    --max-duration; past that (a raised limit, or library use with a GenerationItem) the memory check
    refuses before the first step, naming what fits — and a request that fits still runs."""
    import time

    from tunesmith import runtime
    from tunesmith.errors import UserError
    from tunesmith.inference.request import GenerationItem

    start = time.perf_counter()
    with pytest.raises(UserError, match=r"duration=1e\+12 s × 1 item\(s\) needs about .* the longest that fits"):
        generator.generate([GenerationItem(prompt="x", duration=1e12, seed=0)])
    assert time.perf_counter() - start < 5
    monkeypatch.setattr(runtime, "available_memory", lambda device: 64 * 2**20)  # a 64 MiB machine
    with pytest.raises(UserError, match="the longest that fits is about"):
        generator.generate([GenerationItem(prompt="x", duration=599.0, seed=0)])
    assert generator.generate([{"prompt": "x", "duration": 0.05, "seed": 0}])[0].wav.size > 0


def test_a_full_disk_while_generating_is_one_line_and_keeps_finished_items(tmp_path, model_dir, monkeypatch):
    import errno

    from tunesmith.audio import io as audio_io
    from tunesmith.errors import UserError
    from tunesmith.inference.batch import BatchOptions, generate_jobs
    from tunesmith.inference.prompts import read_prompts
    from tunesmith.inference.results import read_done

    jobs, problems = read_prompts(["first", "second"], None, {"seed": 1, "duration": 0.05})
    assert not problems
    real_save, calls = audio_io.save_audio, []

    def save_then_fill_the_disk(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(audio_io, "save_audio", save_then_fill_the_disk)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"no space left on the device writing .*nothing was lost: 1 finished items"):
        generate_jobs(model_dir, jobs, out, BatchOptions(batch_size=1), report=lambda line: None)
    assert read_done(out, ".wav") == {jobs[0].id}
    monkeypatch.setattr(audio_io, "save_audio", real_save)
    summary = generate_jobs(model_dir, jobs, out, BatchOptions(batch_size=1), report=lambda line: None)
    assert summary.already_done == 1 and summary.generated == 1


def test_parse_item_errors():
    assert parse_item({"text": "x", "genre": "rock", "bpm": 120}).conditions == {"genre": "rock", "bpm": 120}
    for bad, message in [
        ({"duration": 0}, "duration"),
        ({"prompt": "x", "cfg": "high"}, "cfg"),
        ({"prompt": "x", "top_k": -1}, "top_k"),
        ({"prompt": "x", "seeds": 1}, "unknown field"),
        ([1, 2], "JSON object"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_item(bad)


def test_loader_errors(tmp_path, model_dir):
    with pytest.raises(UserError, match="no such"):
        Generator.from_path(tmp_path / "missing")
    with pytest.raises(UserError, match="not an LM"):
        Generator.from_path(model_dir.parent / "codec")
    with pytest.raises(UserError):
        Generator.from_path(model_dir, codec=tmp_path / "nope")


# --------------------------------------------------------------------------- the command


def _cli(*args: str, cwd) -> subprocess.Popen:
    env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "generate", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_cli_bad_lines_are_reported_and_the_rest_runs(tmp_path, model_dir, capsys, monkeypatch):
    from tunesmith.cli import main

    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"prompt": "bright fast melody", "seed": 3}\n'
        "{not json\n"
        "\n"
        "plain text prompt\n"
        '{"prompt": "x", "duration": -2}\n'
        '{"prompt": "calm soft pad", "genre": "ambient", "duration": 0.05}\n'
    )
    rc = main(["generate", str(model_dir), "--prompts", str(prompts), "--out", "out", "--duration", "0.1", "--json"])
    stdout, stderr = capsys.readouterr()
    assert rc == 1, stderr
    assert stderr.index(f"{prompts}:2: not valid JSON") < stderr.index(f"{prompts}:5: duration=-2.0")
    assert "real-time factor" in stderr
    assert f"warning: {prompts}:6: genre: this model is not conditioned on genre; it uses no attributes (ignored)" in (
        stderr
    )
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["generated"] == 3 and summary["skipped_lines"] == 2
    records = _records(tmp_path / "out")
    assert sorted(r["line"] for r in records) == [1, 4, 6]
    by_line = {r["line"]: r for r in records}
    assert by_line[6]["conditions"] == {"genre": "ambient"} and by_line[1]["seed"] == 3
    for r in records:
        data, rate = sf.read(tmp_path / "out" / r["file"])
        assert rate == CODEC_RATE and len(data) == round(r["duration"] * CODEC_RATE)
    assert main(["generate", str(model_dir), "--prompt", "dark slow drone", "--out", "one", "--duration", "0.05"]) == 0
    assert len(_records(tmp_path / "one")) == 1
    assert main(["generate", str(model_dir), "--out", "none"]) == 2  # nothing to generate: a clear error
    assert "give --prompt" in capsys.readouterr().err


def test_cli_warns_about_attribute_values_the_model_never_saw(tmp_path, capsys):
    from tunesmith.cli import main

    attr_model = make_lm_dir(tmp_path, make_codec_dir(tmp_path), attributes=["genre"])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a", "genre": "rock"}\n{"prompt": "b", "genre": "rok", "key": "c major"}\n')
    assert main(["generate", str(attr_model), "--prompts", str(prompts), "--out", str(tmp_path / "o"),
                 "--duration", "0.05"]) == 0  # fmt: skip
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert warnings == [
        f"tunesmith: warning: {prompts}:2: genre: 'rok' is not one of the model's 3 genre values; "
        "did you mean 'rock'? (generated as an unknown value)",
        f"tunesmith: warning: {prompts}:2: key: this model is not conditioned on key; it uses genre (ignored)",
    ]
    assert len(_records(tmp_path / "o")) == 2  # both items still generated


def test_cli_killed_and_rerun_continues_without_redoing(tmp_path, model_dir):
    n = 16
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"melody number {i}", "seed": i}) + "\n" for i in range(n)))
    args = [str(model_dir), "--prompts", str(prompts), "--out", "out", "--duration", "0.5", "--batch-size", "1"]
    results = tmp_path / "out" / "results.jsonl"
    proc = _cli(*args, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and len(results.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed; make the items longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {r["id"]: r for r in _records(tmp_path / "out")}
    assert 3 <= len(first) < n
    before = {r["file"]: (tmp_path / "out" / r["file"]).read_bytes() for r in first.values()}
    # a kill in the middle of an append leaves a partial line: the rerun must cope
    with open(results, "a") as f:
        f.write('{"id": "cut-off')
    again = _cli(*args, cwd=tmp_path)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert f"{len(first)} already done, {n - len(first)} to generate" in stderr
    records = _records(tmp_path / "out")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == n
    for name, data in before.items():
        assert (tmp_path / "out" / name).read_bytes() == data  # finished items never redone
    wavs = sorted(p.name for p in (tmp_path / "out").glob("*.wav"))
    assert wavs == sorted(r["file"] for r in records)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left
    from tunesmith.inference.results import read_done

    assert read_done(tmp_path / "out", ".wav") == set(ids)


def test_exported_model_dir_loads(tmp_path, model_dir, generator):
    from tunesmith.models.export import export_tunesmith

    exported = export_tunesmith(model_dir, tmp_path / "export")
    assert (exported / "codec" / "model.safetensors").is_file()  # the export carries its codec
    from tunesmith.models.export import verify_model_dir

    assert verify_model_dir(exported) == [] and verify_model_dir(exported / "codec") == []
    codec_weights = exported / "codec" / "model.safetensors"
    codec_weights.write_bytes(codec_weights.read_bytes()[:-4])  # a codec damaged in transit is caught from the top
    assert any("codec" in p and "truncated" in p for p in verify_model_dir(exported))
    exported = export_tunesmith(model_dir, tmp_path / "export", force=True)  # replacing one needs --force
    loaded = Generator.from_path(exported)
    item = {"prompt": "dark slow drone", "seed": 2, "duration": 0.05}
    assert np.array_equal(loaded.generate([item])[0].codes, generator.generate([item])[0].codes)


def test_resolve_codec_path_skips_folders_that_hold_no_codec(tmp_path, monkeypatch):
    """An LM trained with `codec=codec` exported from elsewhere: walking up from runs/lm/SIG meets the
    `runs/codec` task folder first; it holds runs, not a codec, and must not be taken for one."""
    from tunesmith.models.codec.loading import resolve_codec_path

    run_dir = tmp_path / "runs" / "lm" / "abcd1234"
    (run_dir / "checkpoints" / "best").mkdir(parents=True)
    (tmp_path / "runs" / "codec" / "5b1e25b3" / "checkpoints").mkdir(parents=True)  # a task folder of runs
    real = tmp_path / "codec"
    (real / "checkpoints").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "runs" / "lm")
    assert resolve_codec_path("codec", run_dir / "checkpoints" / "best", run_dir) == real


def test_duration_limit_for_files_and_flags(tmp_path, model_dir, capsys):
    from tunesmith.cli import main
    from tunesmith.inference.request import FileLimits, parse_item

    with pytest.raises(ValueError, match="duration=700.0: Input should be less than or equal to 600"):
        parse_item({"prompt": "x", "duration": 700.0})
    assert parse_item({"prompt": "x", "duration": 700.0}, None, FileLimits(max_duration=900)).duration == 700.0
    code = main(["generate", str(model_dir), "--prompt", "x", "--duration", "10000", "--out", str(tmp_path / "o")])
    assert code == 2 and "raise --max-duration" in capsys.readouterr().err
