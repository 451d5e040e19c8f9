"""Never delete what is not ours, never read or write outside a folder, survive killed writers and
poisoned or damaged checkpoints (issues 13 and 21)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.fileio import sha256_file
from tunesmith.models.export import export_tunesmith, verify_model_dir
from tunesmith.tasks import build_solver

ARGS = ["train.checkpoint.every_epochs=1"]


def train(runs: Path, *overrides: str) -> dict:
    solver = build_solver("toy", "default", [*ARGS, *overrides], runs_dir=runs)
    return solver.fit() | {"solver": solver}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return Path(train(tmp_path_factory.mktemp("runs"))["run_dir"])


def unrelated(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("1,2,3")
    return folder


def unchanged(folder: Path) -> bool:
    return (folder / "thesis.tex").read_text() == "years of work" and (folder / "sub" / "data.csv").is_file()


def relist(folder: Path, name: str) -> None:
    """Rewrite ``folder``'s manifest to list ``name`` with the checksum of what it points at (an attacker's)."""
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    target = (folder / name).resolve()
    manifest["files"][name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- 1. --out is never someone else's


def test_export_refuses_an_unrelated_folder_and_replaces_its_own_only_with_force(run_dir, tmp_path, capsys):
    out = unrelated(tmp_path / "mine")
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not a model directory tunesmith wrote" in err and "nothing was changed" in err
    assert main(["export", str(run_dir), "--out", str(out), "--force"]) == 2  # --force never deletes others'
    assert unchanged(out) and sorted(p.name for p in out.iterdir()) == ["sub", "thesis.tex"]

    model = tmp_path / "model"
    assert main(["export", str(run_dir), "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["export", str(run_dir), "--out", str(model)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--out", str(model), "--force"]) == 0
    assert verify_model_dir(model) == []
    (model / "notes.txt").write_text("mine")  # a user's file inside an export: not ours to delete
    with pytest.raises(UserError, match="notes.txt"):
        export_tunesmith(run_dir, model, force=True)
    assert (model / "notes.txt").is_file()
    with pytest.raises(UserError, match="training checkpoint"):  # a checkpoint is no export target
        export_tunesmith(run_dir, run_dir / "checkpoints" / "epoch_0001", force=True)
    assert (tmp_path / "empty").mkdir() is None and export_tunesmith(run_dir, tmp_path / "empty").is_dir()


def test_every_writer_goes_through_the_guard(tmp_path):
    from tunesmith.models.hf.export import export_hf
    from tunesmith.models.hf.importer import import_hf
    from tunesmith.models.hf.merge import merge, merge_to_hf
    from tunesmith.models.lm.lora import LoraSettings, write_adapter

    out = unrelated(tmp_path / "mine")
    nowhere = tmp_path / "no-such-source"
    writers = [
        lambda: export_hf(nowhere, out, force=True),
        lambda: import_hf(nowhere, out, force=True),
        lambda: merge(nowhere, out, force=True),
        lambda: merge_to_hf(nowhere, out, force=True),
        lambda: write_adapter(out, {}, LoraSettings(), {}, force=True),
    ]
    for write in writers:
        with pytest.raises(UserError, match="not a model directory tunesmith wrote"):
            write()
        assert unchanged(out)
    adapter = write_adapter(tmp_path / "adapter", {}, LoraSettings(), {})
    with pytest.raises(UserError, match="--force"):
        write_adapter(adapter, {}, LoraSettings(), {})
    write_adapter(adapter, {}, LoraSettings(), {}, force=True)  # the run's own adapter, rewritten


# --------------------------------------------------------------------------- 2. paths stay inside their folder


def test_manifest_paths_outside_the_folder_are_flagged_and_never_written(run_dir, tmp_path, capsys):
    model = export_tunesmith(run_dir, tmp_path / "deep" / "model")
    (tmp_path / "payload.txt").write_text("attacker")
    relist(model, "../../payload.txt")
    problems = verify_model_dir(model)
    assert any("payload.txt" in p and "'..'" in p for p in problems)
    assert main(["verify", str(model)]) == 1
    assert "payload.txt" in capsys.readouterr().out
    # a symbolic link out, listed with the right checksum
    model2 = export_tunesmith(run_dir, tmp_path / "model2")
    (model2 / "evil.txt").symlink_to(tmp_path / "payload.txt")
    relist(model2, "evil.txt")
    assert any("evil.txt" in p and "outside" in p for p in verify_model_dir(model2))
    assert ckpt.verify_folder(model2)
    # a config whose side files climb out: export refuses, nothing lands outside --out
    config = json.loads((model / "config.json").read_text())
    config["files"] = ["../../payload.txt"]
    (model / "config.json").write_text(json.dumps(config))
    (model / ckpt.MANIFEST).write_text(json.dumps({"format": 1, "files": {}}))
    target = tmp_path / "x" / "y" / "out"
    with pytest.raises(UserError, match="payload.txt"):
        export_tunesmith(model, target)
    assert not (tmp_path / "x").exists() and (tmp_path / "payload.txt").read_text() == "attacker"
    assert any("'files' lists" in p for p in verify_model_dir(model))


# --------------------------------------------------------------------------- 3. killed writers, history


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_folders_of_dead_writers_are_removed_on_start(tmp_path, caplog):
    result = train(tmp_path)
    ckpts = Path(result["run_dir"]) / "checkpoints"
    dead = _dead_pid()
    stale = [ckpts / f".last.tmp-{dead}", ckpts / f".epoch_0002.tmp-{dead}"]
    for folder in stale:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    stale_file = ckpts / f".manifest.json.tmp.{dead}.0a1b2c3d.json"
    stale_file.write_text("{")
    live = ckpts / f".best.tmp-{os.getpid()}"  # a live writer's: kept
    live.mkdir()
    history_tmp = ckpts.parent / f".history.jsonl.tmp.{dead}.1234abcd.jsonl"  # a killed history rewrite
    history_tmp.write_text("{")
    with caplog.at_level(logging.INFO, logger="tunesmith.train"):
        train(tmp_path)
    assert not any(p.exists() for p in [*stale, stale_file, history_tmp]) and live.is_dir()
    removed = [r.getMessage() for r in caplog.records if "killed" in r.getMessage()]
    assert len(removed) == 4 and sum("checkpoint write" in m for m in removed) == 3


def test_history_is_replaced_by_rename_never_truncated_in_place(tmp_path, monkeypatch):
    from tunesmith.engine import tracking

    tracker = tracking.Tracker(
        tmp_path, enabled=True, tensorboard=False, wandb_mode="off", wandb_project="", run_name="x", config={}
    )
    for step in range(5):
        tracker.write("train", step, 0, {"loss": 1.0})
    before = tracker.history_path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between writing the new file and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        tracker.truncate_history(2)
    assert tracker.history_path.read_bytes() == before  # the old history is whole
    monkeypatch.undo()
    inode = tracker.history_path.stat().st_ino
    tracker.truncate_history(2)
    assert tracker.history_path.read_bytes().splitlines(keepends=True) == before.splitlines(keepends=True)[:2]
    assert tracker.history_path.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == ["history.jsonl"]


# --------------------------------------------------------------------------- 4. verify: clear and complete


def test_verify_names_bad_config_values_and_lists_every_problem(run_dir, tmp_path, capsys):
    model = export_tunesmith(run_dir, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    for key, value, expected in [
        ("format_version", "2", "format_version='2' must be a whole number"),
        ("model_type", 7, "model_type=7 is not a string"),
        ("model_type", None, "no model_type"),
    ]:
        (model / "config.json").write_text(json.dumps({**config, key: value}))
        problems = verify_model_dir(model)
        assert any(expected in p for p in problems), problems
        assert any("config.json" in p and "altered" in p for p in problems), problems  # checksums still checked
        assert main(["verify", str(model)]) == 1
        out = capsys.readouterr()
        assert expected in out.out and "Traceback" not in out.err
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    problems = verify_model_dir(model)
    assert any("no model_type" in p for p in problems) and any("model.safetensors" in p for p in problems)


# --------------------------------------------------------------------------- 6. a poisoned state.pt


class _Poison:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_poisoned_state_is_refused_without_torchs_advice_and_the_previous_checkpoint_is_used(tmp_path, caplog):
    result = train(tmp_path)
    ckpts = Path(result["run_dir"]) / "checkpoints"
    marker = tmp_path / "pwned"
    state = ckpts / "last" / ckpt.STATE
    state.unlink()  # hard links elsewhere keep their content
    torch.save({"step": 15, "payload": _Poison(marker)}, state)
    relist(ckpts / "last", ckpt.STATE)
    assert ckpt.verify_folder(ckpts / "last") == []  # the manifest matches: only loading can tell
    with pytest.raises(ckpt.CheckpointError, match="not a tunesmith training state") as err:
        ckpt.load_state(ckpts / "last")
    assert "weights_only" not in str(err.value)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        resumed = train(tmp_path)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "not a tunesmith training state" in text and "will not be loaded" in text
    assert "weights_only" not in text and "Re-running" not in text
    assert f"resumed from {ckpts / 'epoch_0003'}" in text
    assert resumed["step"] == 15 and not marker.exists()


# --------------------------------------------------------------------------- 7. one bit flip, one copy lost


def test_a_bit_flip_in_last_reaches_no_other_copy_and_resume_loses_nothing_more(tmp_path, caplog):
    result = train(tmp_path)
    ckpts = Path(result["run_dir"]) / "checkpoints"
    expected = ckpt.load_weights(ckpts / "last", ema=False)
    weights = ckpts / "last" / ckpt.WEIGHTS
    with open(weights, "r+b") as f:  # in place, like the disk would: every hard link sees it
        f.seek(weights.stat().st_size - 7)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    assert ckpt.verify_folder(ckpts / "last")
    assert ckpt.verify_folder(ckpts / "epoch_0003") == [] and ckpt.verify_folder(ckpts / "best") == []
    good = ckpt.latest_good_checkpoint(Path(result["run_dir"]))
    assert good is not None and json.loads((good / ckpt.MANIFEST).read_text())["step"] == 15
    caplog.clear()
    with caplog.at_level(logging.INFO):
        resumed = train(tmp_path)
    assert "resumed from" in caplog.text and "epoch 3, step 15" in caplog.text
    assert resumed["step"] == 15
    got = ckpt.load_weights(good, ema=False)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor)
    shutil.rmtree(ckpts / "last")
    assert ckpt.find_checkpoint(resumed["run_dir"], which="last").name in ("epoch_0003", "best")


def test_an_imported_musicgen_is_replaced_with_force_and_a_stray_file_in_its_parts_still_refuses(tmp_path):
    """An imported model dir holds t5/ and codec/ with their own manifests and configs (a T5's says t5):
    `import hf --force` replaces tunesmith's own import; a user's file inside a part is never deleted."""
    from support.hf import make_musicgen_dir
    from tunesmith.models.hf.importer import import_hf

    source = make_musicgen_dir(tmp_path / "hf")
    out = import_hf(source, tmp_path / "imported")
    with pytest.raises(UserError, match="--force"):
        import_hf(source, out)
    assert import_hf(source, out, force=True) == out and verify_model_dir(out) == []
    (out / "t5" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="it holds t5"):
        import_hf(source, out, force=True)
    assert (out / "t5" / "notes.txt").read_text() == "mine"
