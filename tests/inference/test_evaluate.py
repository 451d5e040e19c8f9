"""`tunesmith eval` end to end: a tiny LM run trained on the synthetic dataset, generation from the reference
set's descriptions, the report, resume after SIGKILL, and the reference-statistics cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.evalmodels import TINY_LM_OVERRIDES, make_eval_data
from tunesmith.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A prepared synthetic dataset at the codec's rate (valid: 2 tracks × 2 segments) and a 2-update LM run."""
    from tunesmith.tasks import build_solver

    root = tmp_path_factory.mktemp("eval_e2e")
    data, codec = make_eval_data(root)
    runs = root / "runs"
    overrides = [f"data={data}", f"codec={codec}", *TINY_LM_OVERRIDES]
    result = build_solver("lm", "tiny", overrides, runs_dir=runs).fit()
    return {"data": data, "codec": codec, "runs": runs, "run": Path(result["run_dir"]), "root": root}


def _eval(tiny_run, *extra: str, out: Path) -> tuple[int, dict]:
    from tunesmith.cli import main

    args = ["eval", str(tiny_run["run"]), "--reference", str(tiny_run["data"]), "--runs-dir", str(tiny_run["runs"])]
    rc = main([*args, "--out", str(out), "--json", *extra])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    return rc, report


def _by_name(report: dict) -> dict:
    return {r["name"]: r for r in report["results"]}


def test_eval_end_to_end_reuses_samples_and_reference_statistics(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc, report = _eval(tiny_run, "--metrics", "fad,clap,kld,chroma,wer", "--num-samples", "4", out=out)
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == report
    results = _by_name(report)
    fad = results["fad"]
    assert fad["clips"] == 4 and fad["values"]["fad"] >= 0 and fad["model"].startswith("codec-latent:")
    assert fad["details"]["frames"] == 4 * round(0.15 * 200) and fad["details"]["reference_clips"] == 4
    assert not fad["details"]["reference_cached"]
    assert any("biased" in w for w in fad["details"]["warnings"])  # few frames: said next to the number
    assert len(fad["per_clip"]) == 4
    assert "--clap-dir" in results["clap"]["skipped"] and "--classifier-dir" in results["kld"]["skipped"]
    assert "no transcripts" in results["wer"]["skipped"]
    assert results["chroma"]["clips"] == 4
    assert report["info"]["generated_now"] == 4 and report["num_samples"] == 4
    records = [json.loads(line) for line in (out / "samples" / "results.jsonl").read_text().splitlines()]
    from tunesmith.data.manifest import read_info, read_manifest

    descriptions = {read_info(tiny_run["data"], e)["description"] for e in read_manifest(tiny_run["data"], "valid")}
    assert {r["prompt"] for r in records} <= descriptions and len({r["prompt"] for r in records}) >= 2
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3]
    assert all(r["duration"] == pytest.approx(0.15) for r in records)  # the run's generate.duration

    # again: nothing regenerated, the reference statistics come from the cache, same numbers
    before = {p.name: p.read_bytes() for p in (out / "samples").glob("*.wav")}
    rc, again = _eval(tiny_run, "--metrics", "fad,chroma", "--num-samples", "4", out=out)
    assert rc == 0 and again["info"]["generated_now"] == 0 and again["info"]["already_done"] == 4
    assert _by_name(again)["fad"]["details"]["reference_cached"]
    assert _by_name(again)["fad"]["values"]["fad"] == pytest.approx(fad["values"]["fad"], rel=1e-9)
    assert {p.name: p.read_bytes() for p in (out / "samples").glob("*.wav")} == before

    # a changed reference set (re-prepared: its manifest differs) recomputes the statistics
    manifest = tiny_run["data"] / "egs" / "valid" / "data.jsonl"
    original = manifest.read_text()
    try:
        lines = original.splitlines()
        manifest.write_text("\n".join(lines[1:] + lines[:1]) + "\n")
        rc, changed = _eval(tiny_run, "--metrics", "fad", "--num-samples", "4", out=tmp_path / "changed")
        assert rc == 0 and not _by_name(changed)["fad"]["details"]["reference_cached"]
    finally:
        manifest.write_text(original)


def test_table_and_bad_input(tiny_run, tmp_path, capsys):
    from tunesmith.cli import main

    base = ["eval", str(tiny_run["run"]), "--runs-dir", str(tiny_run["runs"]), "--num-samples", "2"]
    out = tmp_path / "t"
    assert main([*base, "--reference", str(tiny_run["data"]), "--metrics", "fad,clap", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "fad " in table and "lower" in table and "2 clips / 60 frames" in table and "skipped" in table
    assert main([*base, "--reference", str(tiny_run["data"]), "--metrics", "fad,bleu", "--out", str(out)]) == 2
    assert "unknown metric(s) bleu" in capsys.readouterr().err
    assert main([*base, "--reference", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "reference dataset folder not found" in capsys.readouterr().err
    assert main([*base, "--reference", str(tiny_run["data"]), "--split", "test", "--out", str(out)]) == 2
    assert "no test split" in capsys.readouterr().err
    assert main([*base, "--out", str(out)]) == 2
    assert "--reference DATA_DIR is required" in capsys.readouterr().err
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    args = [*base, "--reference", str(tiny_run["data"]), "--metrics", "fad", "--out", str(out)]
    assert main([*args, "--embedder-dir", str(bert)]) == 2
    err = capsys.readouterr().err
    assert "'bert' (BertModel)" in err and "audio encoder" in err


def test_reference_without_descriptions_skips_text_metrics(tiny_run, tmp_path):
    """Sidecars without descriptions: unconditional samples, FAD still measured, CLAP/KLD skipped with a reason."""
    import shutil

    data = tmp_path / "nodesc"
    shutil.copytree(tiny_run["data"], data)
    for sidecar in (data / "segments").rglob("*.json"):
        info = json.loads(sidecar.read_text())
        info["description"] = ""
        sidecar.write_text(json.dumps(info))
    out = tmp_path / "o"
    tiny = {**tiny_run, "data": data}
    rc, report = _eval(tiny, "--metrics", "fad,clap,kld", "--num-samples", "2", out=out)
    assert rc == 0
    results = _by_name(report)
    assert "fad" in results and not results["fad"]["skipped"]
    assert "no descriptions" in results["clap"]["skipped"] and "no descriptions" in results["kld"]["skipped"]


def test_a_midi_run_goes_to_the_midi_evaluation(tmp_path, monkeypatch, capsys):
    import types

    from tunesmith.cli import main

    run = tmp_path / "runs" / "midi" / "abc123"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"task": "midi"}))
    calls = []

    class Report:
        def table(self):
            return "midi table"

        def to_dict(self):
            return {"midi": 1}

    def evaluate_midi_run(target, **kwargs):
        calls.append((Path(target), kwargs))
        return Report()

    monkeypatch.setitem(
        sys.modules, "tunesmith.inference.midi_eval", types.SimpleNamespace(evaluate_midi_run=evaluate_midi_run)
    )
    assert main(["eval", "abc", "--runs-dir", str(tmp_path / "runs"), "--num-samples", "3", "--seed", "5"]) == 0
    assert capsys.readouterr().out.strip() == "midi table"
    assert calls == [(run, {"split": "valid", "checkpoint": "best", "num_samples": 3, "seed": 5,
                            "runs_dir": tmp_path / "runs"})]  # fmt: skip
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"midi": 1}
    monkeypatch.setitem(sys.modules, "tunesmith.inference.midi_eval", None)  # a build without it
    assert main(["eval", str(run)]) == 2
    assert "MIDI evaluation is not available in this build" in capsys.readouterr().err


def test_killed_evaluation_resumes_without_regenerating(tiny_run, tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable, "-m", "tunesmith", "eval", str(tiny_run["run"]), "--reference", str(tiny_run["data"]),
        "--runs-dir", str(tiny_run["runs"]), "--split", "train", "--num-samples", "8", "--duration", "0.8",
        "--batch-size", "1", "--metrics", "fad", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "TUNESMITH_THREADS": "1"}
    results = out / "samples" / "results.jsonl"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed; make the samples longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [json.loads(line) for line in results.read_text().splitlines()]
    assert 2 <= len(first) < 8
    before = {r["file"]: (out / "samples" / r["file"]).read_bytes() for r in first}
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(first)} already done, {8 - len(first)} to generate" in again.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["generated_now"] == 8 - len(first) and report["num_samples"] == 8
    for name, data in before.items():
        assert (out / "samples" / name).read_bytes() == data


def test_choose_reference_is_even_and_stable(tiny_run):
    from tunesmith.inference.evaluate import choose_reference

    items, identity = choose_reference(tiny_run["data"], "train", 3)
    again, same = choose_reference(tiny_run["data"], "train", 3)
    assert [i.index for i in items] == [i.index for i in again] and identity == same
    assert items[0].index == 0 and len(items) == 3 and all(i.description for i in items)
    with pytest.raises(UserError, match="no valid2 split"):
        choose_reference(tiny_run["data"], "valid2", 3)


def test_model_dirs_come_from_flags_then_the_run_config():
    from tunesmith.eval.suite import MetricModels
    from tunesmith.inference.evaluate import configured_models

    run_config = {"evaluate": {"clap_dir": "/models/clap", "whisper_dir": "/models/whisper"}}
    filled = configured_models(run_config, MetricModels(whisper_dir="/flag/whisper"))
    assert filled.clap_dir == "/models/clap" and filled.whisper_dir == "/flag/whisper" and not filled.embedder_dir
    assert configured_models({}, MetricModels()).clap_dir == ""


def test_a_melody_model_is_given_each_reference_segments_melody(tmp_path):
    """For a melody-conditioned model every job carries its reference segment as the melody (else the chroma
    metric compares the samples with melodies they never saw); other models get none."""
    from tunesmith.eval.reference import ReferenceItem
    from tunesmith.inference.evaluate import reference_jobs

    items = [ReferenceItem(i, tmp_path / f"{i}.wav", f"song {i}", "", {"genre": "rock"}) for i in range(3)]
    settings = {"duration": 2.0, "cfg": 3.0, "temperature": 1.0, "top_k": 250, "top_p": 0.0}
    melody_jobs = reference_jobs(items, settings, 0, ("genre",), melody=True)
    assert [j.item.conditions for j in melody_jobs] == [
        {"genre": "rock", "melody": str(tmp_path / f"{i}.wav")} for i in range(3)
    ]
    assert all("melody" not in j.item.conditions for j in reference_jobs(items, settings, 0, ("genre",)))
