"""`tunesmith check data DIR`: consistency errors, caption statistics, conditioning warnings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from support.audio import write_tone
from tunesmith.cli import main
from tunesmith.data.checks import check_dataset, count_tokens, validate_conditioning
from tunesmith.data.manifest import read_manifest, resolve_path
from tunesmith.data.prepare import prepare_dataset
from tunesmith.errors import UserError


def _synthetic(out):
    prepare_dataset(
        [], out, source="synthetic", num_tracks=6, track_duration=2.0, sample_rate=8000, segment=1.0,
        valid_fraction=0.2, progress=False,
    )  # fmt: skip
    return out


def test_good_dataset(tmp_path):
    out = _synthetic(tmp_path / "ds")
    report = check_dataset(out)
    assert report.ok and report.errors == [] and report.warnings == []
    train = report.stats["train"]
    assert train["segments"] == 10 and train["description_share"] == 1.0
    assert train["avg_description_tokens"] > 10 and sum(train["genres"].values()) == 10


def test_missing_and_mismatched_files_are_errors(tmp_path):
    out = _synthetic(tmp_path / "ds")
    entries = read_manifest(out, "train")
    resolve_path(out, entries[0]).unlink()
    sf.write(str(resolve_path(out, entries[1])), np.zeros(4000, np.float32), 8000)  # 0.5 s, manifest says 1 s
    sf.write(str(resolve_path(out, entries[2])), np.zeros(16000, np.float32), 16000)  # wrong rate
    resolve_path(out, entries[3]).with_suffix(".json").write_text("{broken")
    report = check_dataset(out)
    text = "\n".join(report.errors)
    assert not report.ok and report.stats["errors_total"] == 4
    assert "missing audio file" in text and "manifest says 1.0 s" in text
    assert "16000 Hz, manifest says 8000 Hz" in text and "unreadable sidecar" in text


def test_uncaptioned_folder_warns_unconditional(tmp_path):
    src = tmp_path / "flat"
    for i in range(4):
        write_tone(src / f"t{i}.wav", 2.0, 8000, freq=300 + 50 * i)
    out = tmp_path / "ds"
    prepare_dataset([src], out, sample_rate=8000, segment=1.0, valid_fraction=0.0, progress=False)
    report = check_dataset(out)
    assert report.ok and report.stats["train"]["description_share"] == 0.0
    assert any("unconditional" in w for w in report.warnings)


def test_validate_conditioning_rules():
    assert validate_conditioning(["rock, 120 bpm", "jazz, piano"] * 5) == []
    assert "identical" in validate_conditioning(["rock"] * 10)[0]
    assert "only 20%" in validate_conditioning(["a", "b"] + [""] * 8)[0]
    assert "covers 95%" in validate_conditioning(["rock"] * 19 + ["jazz"])[0]
    assert "would be unconditional" in validate_conditioning(["", " "])[0]
    assert count_tokens("electronic, ambient, 120 bpm") == 6


def test_not_a_dataset(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        check_dataset(tmp_path / "nope")
    with pytest.raises(UserError, match="prepared dataset"):
        check_dataset(tmp_path)


def test_cli_exit_codes_and_json(tmp_path, capsys):
    out = _synthetic(tmp_path / "ds")
    assert main(["check", "data", str(out)]) == 0
    assert "100% described" in capsys.readouterr().out
    assert main(["check", "data", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    resolve_path(out, read_manifest(out, "valid")[0]).unlink()
    assert main(["check", "data", str(out)]) == 1
    assert "missing audio file" in capsys.readouterr().out
    assert main(["check", "data", str(tmp_path / "none")]) == 2
