"""A transformers MusicGen directory as MODEL: `generate` and `serve` import it once into the shared
import cache (<runs>/.hf_imports, the cache `train lm init_from=hf:DIR` uses) and generate from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from support.hf import SAMPLE_RATE, make_musicgen_dir  # noqa: E402
from tunesmith.errors import UserError  # noqa: E402
from tunesmith.inference.lm import Generator, load_verified  # noqa: E402
from tunesmith.inference.sources import IMPORTS_DIR, is_hf_musicgen, resolve_model_source  # noqa: E402
from tunesmith.models.hf.importer import import_hf  # noqa: E402

ITEM = {"prompt": "a calm piano melody", "seed": 4, "duration": 0.05, "top_k": 8}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_musicgen_dir(tmp_path_factory.mktemp("hf") / "musicgen")


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_a_musicgen_dir_is_imported_once_into_the_shared_cache(hf_dir, runs, tmp_path):
    assert is_hf_musicgen(hf_dir) and not is_hf_musicgen(tmp_path)
    generator = Generator.from_path(hf_dir)
    cached = list((runs / IMPORTS_DIR).iterdir())
    assert len(cached) == 1 and (cached[0] / "t5").is_dir() and (cached[0] / "codec").is_dir()
    stamp = (cached[0] / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_source(hf_dir) == cached[0]  # reused, not imported again
    assert (cached[0] / "model.safetensors").stat().st_mtime_ns == stamp
    ours = generator.generate([ITEM])[0]
    explicit = Generator.from_path(import_hf(hf_dir, tmp_path / "explicit")).generate([ITEM])[0]
    assert ours.sample_rate == SAMPLE_RATE and np.array_equal(ours.codes, explicit.codes)
    assert np.array_equal(ours.wav, explicit.wav)
    served = load_verified(hf_dir, "cpu")  # what `tunesmith serve DIR` loads
    assert np.array_equal(served.generate([ITEM])[0].codes, ours.codes)


def test_generate_command_takes_a_musicgen_dir(hf_dir, runs, tmp_path, capsys):
    from tunesmith.cli import main

    out = tmp_path / "out"
    rc = main(["generate", str(hf_dir), "--prompt", "a calm piano melody", "--out", str(out), "--duration", "0.05"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "(from the lm family's defaults; flags: duration)" in err  # an import has no run settings
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["model"] == str(hf_dir) and record["top_k"] == 250 and (out / record["file"]).is_file()


def test_a_damaged_musicgen_dir_is_a_clear_error(hf_dir, runs, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(hf_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UserError, match="cannot load this Hugging Face directory"):
        Generator.from_path(broken)
    assert not (runs / IMPORTS_DIR).exists() or not any((runs / IMPORTS_DIR).iterdir())
