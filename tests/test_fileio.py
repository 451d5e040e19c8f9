"""tunesmith.fileio: atomic writes, link-or-copy, folder swaps, sha256."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from tunesmith import fileio


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_round_trip(tmp_path: Path) -> None:
    fileio.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    fileio.atomic_write_text(tmp_path / "sub" / "b.txt", "é\n", fsync=False)  # the folder is created
    fileio.atomic_write_json(tmp_path / "c.json", {"b": 1, "a": Path("x")})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "é\n"
    assert (tmp_path / "c.json").read_text() == '{\n  "a": "x",\n  "b": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.json", "sub"]  # no temp files left


def test_a_writer_dying_midway_leaves_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "keep.json"
    fileio.atomic_write_json(target, {"v": 1})
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="killed"), fileio.atomic_path(target) as tmp:
        tmp.write_bytes(b'{"v": 2')  # half of the new content, then the writer dies
        raise RuntimeError("killed")
    assert target.read_bytes() == before
    with pytest.raises(RuntimeError), fileio.atomic_path(tmp_path / "new.json") as tmp:
        tmp.write_text("{")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]  # no new file, no temp file


def test_temp_path_keeps_the_suffix_for_writers_that_add_one(tmp_path: Path) -> None:
    with fileio.atomic_path(tmp_path / "codes.npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path and tmp.name.startswith(".codes.npy.tmp.")
        tmp.write_bytes(b"x")


def test_files_get_the_umask_permissions_not_mkstemps(tmp_path: Path, umask_022: None) -> None:
    fileio.atomic_write_text(tmp_path / "a.txt", "x")
    with fileio.atomic_path(tmp_path / "b.wav") as tmp:
        tmp.write_bytes(b"RIFF")  # a writer that opens the given path itself (soundfile, numpy)
    fileio.link_or_copy(tmp_path / "a.txt", tmp_path / "c.txt")
    assert _mode(tmp_path / "a.txt") == 0o644
    assert _mode(tmp_path / "b.wav") == 0o644
    assert _mode(tmp_path / "c.txt") == 0o644


def test_replacing_keeps_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        fileio.atomic_write_text(tmp_path / "a.txt", "x")
        fileio.atomic_write_text(tmp_path / "a.txt", "y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o640


def test_link_or_copy_links_when_it_can(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    fileio.link_or_copy(src, tmp_path / "dst.bin")
    assert (tmp_path / "dst.bin").stat().st_ino == src.stat().st_ino


def test_link_or_copy_copies_across_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    (tmp_path / "dst.bin").write_bytes(b"old")

    def cross_device(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    fileio.link_or_copy(src, tmp_path / "dst.bin")  # replaces the existing file
    assert (tmp_path / "dst.bin").read_bytes() == b"data"
    assert (tmp_path / "dst.bin").stat().st_ino != src.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst.bin", "src.bin"]


def test_link_tree(tmp_path: Path) -> None:
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "f").write_text("x")
    fileio.link_tree(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "sub" / "f").stat().st_ino == (tmp_path / "a" / "sub" / "f").stat().st_ino


def test_swap_folder_replaces_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with fileio.swap_folder(target) as tmp:
        (tmp / "w").write_text("1")
    with fileio.swap_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.tmp-") and not any(tmp.iterdir())
        (tmp / "w").write_text("2")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("3")
    assert (target / "w").read_text() == "2" and (target / "sub" / "x").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .prev, no temp folder


def test_swap_folder_keeps_the_old_folder_when_building_fails(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with fileio.swap_folder(target) as tmp:
        (tmp / "w").write_text("old")
    with pytest.raises(RuntimeError, match="build failed"), fileio.swap_folder(target) as tmp:
        (tmp / "w").write_text("half")
        raise RuntimeError("build failed")
    assert (target / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(RuntimeError), fileio.swap_folder(tmp_path / "new"):
        raise RuntimeError("build failed")
    assert not (tmp_path / "new").exists()


def test_replace_folder_after_a_kill_between_the_renames(tmp_path: Path) -> None:
    """A kill after ``folder`` became ``folder.prev``: the next swap still ends with one complete folder."""
    target = tmp_path / "ckpt"
    (tmp_path / "ckpt.prev").mkdir()
    (tmp_path / "ckpt.prev" / "w").write_text("older")
    with fileio.swap_folder(target) as tmp:
        (tmp / "w").write_text("new")
    assert (target / "w").read_text() == "new" and not (tmp_path / "ckpt.prev").exists()


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(5000)
    (tmp_path / "f").write_bytes(data)
    assert fileio.sha256_file(tmp_path / "f", chunk=1000) == hashlib.sha256(data).hexdigest()


def test_checkpoint_and_audio_use_the_same_helpers() -> None:
    from tunesmith.artifacts import checkpoint
    from tunesmith.audio import io

    assert checkpoint.sha256_file is fileio.sha256_file
    assert checkpoint.atomic_write_bytes is fileio.atomic_write_bytes
    assert checkpoint.atomic_write_json is fileio.atomic_write_json
    assert checkpoint.replace_folder is fileio.replace_folder
    assert io.atomic_path is fileio.atomic_path  # save_audio writes through it
    assert not hasattr(io, "write_atomic_text")  # one name for one helper: fileio.atomic_write_text


def test_contained_path_keeps_names_read_from_files_inside_their_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "sub").mkdir()
    (tmp_path / "outside.txt").write_text("x")
    (tmp_path / "m" / "out-link").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "m" / "in-link").symlink_to(tmp_path / "m" / "sub")
    assert fileio.contained_path(tmp_path / "m", "a.json") == tmp_path / "m" / "a.json"
    assert fileio.contained_path(tmp_path / "m", "sub/b.json") == tmp_path / "m" / "sub" / "b.json"
    assert fileio.contained_path(tmp_path / "m", "in-link/c") == tmp_path / "m" / "in-link" / "c"
    for name, why in [
        ("../outside.txt", "'..'"),
        ("sub/../../outside.txt", "'..'"),
        ("/etc/passwd", "absolute"),
        ("~/x", "absolute"),
        ("out-link", "outside"),
        ("", "not a file name"),
        (3, "not a file name"),
        ("a\\..\\b", "backslash"),
    ]:
        with pytest.raises(fileio.UnsafePathError, match=why):
            fileio.contained_path(tmp_path / "m", name)


def test_remove_stale_temps_removes_only_dead_writers_leftovers(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead, alive = proc.pid, os.getpid()
    (tmp_path / f".last.tmp-{dead}").mkdir()
    (tmp_path / f".last.tmp-{dead}" / "model.safetensors").write_bytes(b"part")
    (tmp_path / f".state.pt.tmp.{dead}.deadbeef.pt").write_bytes(b"part")
    (tmp_path / f".best.tmp-{alive}").mkdir()
    (tmp_path / f".x.json.tmp.{alive}.0badc0de.json").write_text("{")
    for keep in ("last", "last.prev", ".lock", "notes.tmp-12"):
        (tmp_path / keep).mkdir()
    removed = fileio.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".last.tmp-{dead}", f".state.pt.tmp.{dead}.deadbeef.pt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".best.tmp-{alive}", f".x.json.tmp.{alive}.0badc0de.json", "last", "last.prev", ".lock", "notes.tmp-12"]
    )
    assert fileio.temp_writer_pid(".a.tmp-17") == 17 and fileio.temp_writer_pid("a.tmp-17") is None
