"""Batch generation as a library call (no argparse): jobs in, audio + results.jsonl out, resumable."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from support.lm import CODEC_RATE, make_codec_dir, make_lm_dir
from tunesmith.inference.batch import BatchOptions, generate_jobs
from tunesmith.inference.prompts import read_prompts
from tunesmith.inference.request import DEFAULTS

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    from tunesmith.inference.lm import Generator

    root = tmp_path_factory.mktemp("batch")
    return Generator.from_path(make_lm_dir(root, make_codec_dir(root)))


def test_generate_jobs_writes_audio_and_results_and_resumes(tmp_path, generator):
    jobs, problems = read_prompts(["bright fast melody", "dark slow drone", ""], None, {**DEFAULTS, "duration": 0.05})
    assert not problems
    lines: list[str] = []
    out = tmp_path / "out"
    summary = generate_jobs(generator, jobs[:2], out, BatchOptions(batch_size=2, format="flac"), report=lines.append)
    assert summary.generated == 2 and summary.already_done == 0 and summary.real_time_factor > 0
    assert lines[0] == "2 items: 0 already done, 2 to generate" and "real-time factor" in lines[-1]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [j.id for j in jobs[:2]] and {r["batch_size"] for r in records} == {2}
    for r in records:
        data, rate = sf.read(out / r["file"])
        assert r["file"].endswith(".flac") and rate == CODEC_RATE and len(data) == round(0.05 * CODEC_RATE)
    again = generate_jobs(generator, jobs, out, BatchOptions(format="flac"))  # only the new job is generated
    assert again.generated == 1 and again.already_done == 2
    done = generate_jobs(tmp_path / "no-model-needed", jobs, out, BatchOptions(format="flac"))
    assert done.generated == 0 and done.already_done == 3 and done.seconds is None  # nothing loaded


def test_bad_batch_size_is_a_user_error(tmp_path, generator):
    from tunesmith.errors import UserError

    with pytest.raises(UserError, match="--batch-size=0"):
        generate_jobs(generator, [], tmp_path, BatchOptions(batch_size=0))
