"""Writing files safely: the only implementations of atomic write, link-or-copy, folder swap and sha256.

Ground floor: this module imports nothing from tunesmith, so every room uses it — ``audio`` too,
which sits below ``artifacts``. (``artifacts.checkpoint`` re-exports the names it always had.)

- :func:`atomic_path` / :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`:
  a temp file beside the target (``.<name>.tmp.<pid>.<random><suffix>``), optionally fsynced, then
  ``os.replace``: readers see the old content or the new, never a part. The file is created with mode
  0666 less the umask (0644 under umask 022), like any ``open(path, "w")``.
- :func:`give_umask_mode`: the same permissions for a file a library wrote owner-only (safetensors).
- :func:`link_or_copy`: a hard link, or a copy where linking fails (another filesystem); atomic too.
- :func:`swap_folder`: build a folder in a temp sibling, fsync it, rename it into place; the old
  folder waits as ``<name>.prev`` until the new one is in place (:func:`replace_folder`).
- :func:`contained_path`: a path named inside a file (manifest, config) that must stay in its folder.
- :func:`remove_stale_temps`: temp files and folders of writers that were killed (their pid is gone).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NAME_LIMIT = 100  # characters of the target's name kept in a temp name (file names max out at 255 bytes)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's content, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: str | Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_temp_file(path: Path) -> Path:
    """Create an empty, unique temp file beside ``path`` (mode 0666 less the umask) and return its path."""
    while True:
        tmp = path.with_name(f".{path.name[:NAME_LIMIT]}.tmp.{os.getpid()}.{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (same suffix) to write; on success it replaces ``path``.

    ``fsync`` flushes it to disk before the rename (against power loss, not just a killed process).
    On an exception the temp file is removed and ``path`` keeps its old content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` where Linux says it (without changing it), else
    by setting it and putting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_mode(path: str | Path, mode: int = 0o666) -> None:
    """Set ``path``'s permissions to ``mode`` less the umask (0644 under umask 022): what ``open(path, "w")``
    would have given. For files a library writes owner-only (safetensors 0.8 saves through a 0600 temp file)."""
    os.chmod(path, mode & ~current_umask())


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` so that ``path`` holds the old content or the new, never a part."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """UTF-8 ``text`` written like :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | Path, obj: Any, *, fsync: bool = True) -> None:
    """``obj`` as indented JSON with sorted keys (non-JSON values via ``str``) and a final newline."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", fsync=fsync)


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` a hard link to ``src`` (no extra disk), or a copy (with metadata) where linking fails,
    e.g. across filesystems. An existing ``dst`` is replaced atomically."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name[:NAME_LIMIT]}.tmp.{os.getpid()}.{secrets.token_hex(4)}{dst.suffix}")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def link_tree(src: str | Path, dst: str | Path) -> None:
    """Copy the folder tree ``src`` into ``dst`` (created if needed) with :func:`link_or_copy` per file."""
    shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file and folder under ``folder``, and ``folder`` itself."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(root)


def replace_folder(tmp: str | Path, folder: str | Path) -> None:
    """Move complete folder ``tmp`` to ``folder``; an existing ``folder`` waits as ``<name>.prev`` until then,
    so a kill at any moment leaves one complete copy."""
    tmp, folder = Path(tmp), Path(folder)
    prev = folder.with_name(folder.name + ".prev")
    if folder.exists():
        if prev.exists():
            shutil.rmtree(prev)
        os.replace(folder, prev)
    os.replace(tmp, folder)
    fsync_path(folder.parent)
    if prev.exists():
        shutil.rmtree(prev)


@contextlib.contextmanager
def swap_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty temp sibling ``.<name>.tmp-<pid>`` of ``folder`` to fill; on success every file in it
    is fsynced and it replaces ``folder`` (:func:`replace_folder`). On an exception it is removed and
    ``folder`` is left as it was."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        fsync_tree(tmp)
        replace_folder(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- paths named by files


class UnsafePathError(ValueError):
    """A path read from a file (a manifest, a config) that would leave the folder it belongs to."""


def contained_path(folder: str | Path, name: object) -> Path:
    """``folder / name`` when ``name`` (read from a manifest or config) stays inside ``folder``.

    Refused with :class:`UnsafePathError` saying why: not a non-empty string, absolute, with a ``..`` part,
    or resolving (through symbolic links) to somewhere outside ``folder``.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafePathError(f"{name!r} is not a file name")
    if "\\" in name or "\x00" in name:
        raise UnsafePathError(f"{name!r} holds a backslash or NUL byte")
    rel = Path(name)
    if rel.is_absolute() or name.startswith("~"):
        raise UnsafePathError(f"{name!r} is an absolute path")
    if ".." in rel.parts:
        raise UnsafePathError(f"{name!r} climbs out with '..'")
    root = Path(folder).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise UnsafePathError(f"{name!r} leads outside {folder} (a symbolic link out)")
    return Path(folder) / rel


# --------------------------------------------------------------------------- leftovers of killed writers

# ``.<name>.tmp-<pid>`` (swap_folder) and ``.<name>.tmp.<pid>.<hex><suffix>`` (atomic_path, link_or_copy)
_TEMP_NAME = re.compile(r"^\..+\.tmp(?:-(\d+)|\.(\d+)\.[0-9a-f]+(?:\.[^./]*)?)$")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a process we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_writer_pid(name: str) -> int | None:
    """The pid in a temp name this module makes (``.x.tmp-PID`` / ``.x.tmp.PID.HEX``), else None."""
    match = _TEMP_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temp files and folders in ``folder`` (not below) left by writers that died (their pid is
    not alive on this host); a live writer's are kept. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        pid = temp_writer_pid(path.name)
        if pid is None or pid_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
