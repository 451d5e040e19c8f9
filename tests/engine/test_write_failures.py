"""A read-only run folder on resume and a full disk during a checkpoint write end with one line naming
the path, the room needed and that nothing was lost, not a traceback (issue 13)."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.cli import main

TOY = ["train.epochs=1", "train.updates_per_epoch=2"]


def toy(runs: Path, *extra: str) -> int:
    return main(["train", "toy", "default", *TOY, *extra, "--runs-dir", str(runs)])


def _under(path, folder: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve())
    except (TypeError, ValueError):
        return False


@pytest.fixture()
def read_only(monkeypatch):
    """Make every write under a folder fail with EROFS, as on a read-only mount (tests run as root)."""

    def apply(folder: Path) -> None:
        def refuse(path):
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))

        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

        def fake_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and _under(file, folder):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(path, folder):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if _under(path, folder) and not Path(os.fsdecode(path)).is_dir():
                refuse(path)
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)

    return apply


def test_resume_in_a_read_only_run_folder_is_one_line(tmp_path, capsys, read_only) -> None:
    assert toy(tmp_path) == 0
    capsys.readouterr()
    read_only(tmp_path)
    assert toy(tmp_path) == 2
    err = capsys.readouterr().err
    assert "not writable (Read-only file system)" in err and "nothing was written or lost" in err
    assert "Traceback" not in err and str(tmp_path) in err


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 4480 vs 4374"),
    ],
)
def test_full_disk_during_a_checkpoint_write_is_one_line(tmp_path, capsys, monkeypatch, failure) -> None:
    real_save, calls = ckpt.save_checkpoint, []

    def fills_up(*args, **kwargs):  # the first checkpoint fits, the second finds the disk full
        calls.append(1)
        if len(calls) > 1:
            raise failure
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", fills_up)
    assert toy(tmp_path, "train.epochs=2") == 2
    err = capsys.readouterr().err
    assert "no space left on the device writing" in err and "checkpoints" in err
    assert "needed" in err and "free" in err and "nothing was lost" in err
    assert "last complete checkpoint" in err and "last) is intact" in err
    assert "Traceback" not in err and "unexpected pos" not in err
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    assert toy(tmp_path, "train.epochs=2") == 0  # space freed: the same command resumes and finishes
    assert "epoch 2" in capsys.readouterr().out
