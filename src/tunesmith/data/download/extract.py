"""Unpacking zip and tar archives without trusting them.

Every entry is checked before anything is written: a name that is absolute, climbs with ``..``, holds a
backslash or NUL, or would land outside the target through a symbolic link already there (zip-slip), and
any entry that is not a plain file or a folder (symbolic and hard links, devices, FIFOs) makes the whole
archive refused — nothing of it is extracted. Files are written atomically (temp file + rename), so a killed
extraction never leaves a truncated file under a final name; extracting again overwrites and removes the temp
files the killed one left.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tunesmith.fileio import UnsafePathError, atomic_path, contained_path, remove_stale_temps


class UnsafeArchiveError(Exception):
    """An archive with an entry that would escape the target folder or is not a plain file/folder."""


def _safe_target(target: Path, archive: Path, name: str) -> Path:
    try:
        return contained_path(target, name.rstrip("/") or name)
    except UnsafePathError as err:
        raise UnsafeArchiveError(f"{archive.name}: entry {name!r} refused: {err}") from None


def _zip_entries(zf: zipfile.ZipFile, archive: Path, target: Path) -> list[tuple[zipfile.ZipInfo, Path]]:
    entries = []
    for info in zf.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (a plain file or folder)
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(f"{archive.name}: entry {info.filename!r} refused: a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f"{archive.name}: entry {info.filename!r} refused: not a plain file or folder")
        entries.append((info, _safe_target(target, archive, info.filename)))
    return entries


def _tar_entries(tf: tarfile.TarFile, archive: Path, target: Path) -> list[tuple[tarfile.TarInfo, Path]]:
    entries = []
    for info in tf.getmembers():
        if info.issym() or info.islnk():
            raise UnsafeArchiveError(f"{archive.name}: entry {info.name!r} refused: a link (to {info.linkname!r})")
        if not (info.isfile() or info.isdir()):
            raise UnsafeArchiveError(f"{archive.name}: entry {info.name!r} refused: not a plain file or folder")
        entries.append((info, _safe_target(target, archive, info.name)))
    return entries


def check_archive(path: Path, kind: str, target: Path) -> int:
    """Check every entry of ``path`` (see module doc) and return how many there are; raises
    UnsafeArchiveError (unsafe entry) or ValueError (not a readable zip/tar)."""
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            return len(_zip_entries(zf, path, target))
    with tarfile.open(path) as tf:
        return len(_tar_entries(tf, path, target))


def unpacked_size(path: Path, kind: str) -> int:
    """Bytes the archive's files take once unpacked (from its directory; no data is read)."""
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            return sum(i.file_size for i in zf.infolist())
    with tarfile.open(path) as tf:
        return sum(m.size for m in tf.getmembers() if m.isfile())


def _copy(src, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst, fsync=False) as tmp, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def extract_archive(path: Path, kind: str, target: Path, on_file: Callable[[str], None] | None = None) -> list[str]:
    """Unpack ``path`` (zip or tar) into ``target`` after checking every entry; returns the files written
    (relative posix paths). Raises UnsafeArchiveError before writing anything when an entry is unsafe."""
    target.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                for info, dst in _zip_entries(zf, path, target):
                    if info.is_dir():
                        dst.mkdir(parents=True, exist_ok=True)
                        continue
                    with zf.open(info) as src:
                        _copy(src, dst)
                    written.append(info.filename)
                    if on_file:
                        on_file(info.filename)
        elif kind == "tar":
            with tarfile.open(path) as tf:
                for info, dst in _tar_entries(tf, path, target):
                    if info.isdir():
                        dst.mkdir(parents=True, exist_ok=True)
                        continue
                    src = tf.extractfile(info)
                    assert src is not None  # a regular file
                    with src:
                        _copy(src, dst)
                    written.append(info.name)
                    if on_file:
                        on_file(info.name)
        else:
            raise ValueError(f"cannot unpack kind {kind!r}")
    except (zipfile.BadZipFile, tarfile.TarError) as err:
        raise ValueError(f"{path.name}: not a readable {kind} archive ({err})") from None
    for folder in sorted({(target / name).parent for name in written}):
        remove_stale_temps(folder)  # temp files of an extraction that was killed before
    return written
