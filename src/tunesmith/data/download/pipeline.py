"""Fetch, verify and unpack a list of archives into a folder; the report of what happened.

Order of work for ``download_archives``:

1. Files already complete in the folder are verified against their checksum (no request is made for
   them); a mismatch removes the file, which is then fetched again.
2. The others are probed (HEAD: size, Range support) and the free-disk preflight runs on the bytes still
   to fetch plus the bytes to unpack: too little space is refused before any GET.
3. ``jobs`` archives at a time are fetched (resuming part files, :mod:`.client`), verified (the checksum
   is computed while receiving), then checked entry by entry and unpacked (:mod:`.extract`). A checksum
   mismatch removes the file and unpacks nothing. ``on_ready(archive)`` is called as each one completes.
4. ``DIR/.tunesmith-download.json`` records the archives verified and unpacked, so a re-run after
   completion only verifies; the report is returned and written to ``DIR/.tunesmith-download-report.json``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.download.catalogue import Archive
from tunesmith.data.download.client import (
    DownloadError,
    RemoteInfo,
    RetryPolicy,
    discard_parts,
    fetch,
    partial_bytes,
    probe,
)
from tunesmith.data.download.extract import UnsafeArchiveError, check_archive, extract_archive, unpacked_size
from tunesmith.data.download.preflight import SpaceNeed, check_space
from tunesmith.data.download.progress import ByteMeter
from tunesmith.data.download.verify import file_checksum
from tunesmith.errors import UserError
from tunesmith.fileio import atomic_write_json

log = logging.getLogger("tunesmith.data.download")

STATE_FILE = ".tunesmith-download.json"
REPORT_FILE = ".tunesmith-download-report.json"


@dataclass
class DownloadOptions:
    """``base_url``: a mirror holding the archives at their catalogue paths (None: the official servers);
    ``jobs``: archives fetched at once; ``connections``: parallel ranged parts per archive, each at least
    ``min_part_size`` bytes; ``extract``: unpack after verifying; ``progress``: show a bar."""

    base_url: str | None = None
    jobs: int = 2
    connections: int = 1
    min_part_size: int = 64 << 20
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    extract: bool = True
    progress: bool = True
    remove_archives: bool = False  # delete each archive once verified and unpacked (its files' sizes are kept)


@dataclass
class Outcome:
    """What happened to one archive: ``status`` is complete (nothing to do but verify), done or failed."""

    name: str
    status: str = "pending"
    fetched: int = 0
    resumed_from: int = 0
    verified: bool = False
    extracted_files: int = 0
    removed: bool = False
    reason: str = ""


class _State:
    """``DIR/.tunesmith-download.json``: archive name → checksum and unpacked file count (written atomically)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / STATE_FILE
        self.lock = threading.Lock()
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            self.data = {}
        self.data.setdefault("archives", {})

    def unpacked(self, archive: Archive) -> bool:
        entry = self.data["archives"].get(archive.name)
        return bool(entry) and entry.get("checksum") == archive.checksum and entry.get("unpacked") is True

    def record(self, archive: Archive, files: list[str], folder: Path, removed: bool = False) -> None:
        entry: dict[str, Any] = {"checksum": archive.checksum, "unpacked": True, "files": len(files)}
        if removed:  # the archive is gone: its files' sizes are what a re-run checks
            entry["removed"] = True
            entry["members"] = {name: (folder / name).stat().st_size for name in files}
        with self.lock:
            self.data["archives"][archive.name] = entry
            atomic_write_json(self.path, self.data, fsync=False)

    def forget(self, archive: Archive) -> None:
        with self.lock:
            if self.data["archives"].pop(archive.name, None) is not None:
                atomic_write_json(self.path, self.data, fsync=False)

    def removed_intact(self, archive: Archive, folder: Path) -> bool:
        """An archive deleted after unpacking whose files are all still there with their sizes."""
        entry = self.data["archives"].get(archive.name)
        if not (entry and self.unpacked(archive) and entry.get("removed") and isinstance(entry.get("members"), dict)):
            return False
        for name, size in entry["members"].items():
            try:
                if (folder / name).stat().st_size != size:
                    return False
            except OSError:
                return False
        return True


def _needs_unpack(archive: Archive, options: DownloadOptions, state: _State) -> bool:
    return options.extract and archive.kind in ("zip", "tar") and not state.unpacked(archive)


def _verify_existing(archive: Archive, folder: Path, outcome: Outcome, state: _State) -> bool:
    dest = folder / archive.name
    if not dest.is_file():
        if state.removed_intact(archive, folder):
            outcome.verified = outcome.removed = True
            return True
        state.forget(archive)  # fetched again below, so unpacked again
        return False
    digest = file_checksum(dest, archive.algorithm)
    if digest == archive.checksum:
        outcome.verified = True
        discard_parts(dest)
        return True
    log.warning(
        "%s: %s %s does not match the published %s; fetching it again",
        dest,
        archive.algorithm,
        digest,
        archive.checksum,
    )
    dest.unlink()
    return False


def _space_needs(
    archives: list[Archive], folder: Path, infos: dict[str, RemoteInfo], options: DownloadOptions, state: _State
) -> list[SpaceNeed]:
    needs = []
    for archive in archives:
        dest = folder / archive.name
        unpack = 0
        if archive.name in infos:
            info = infos[archive.name]
            size = archive.size if archive.size is not None else info.size
            size = size if size is not None else archive.approx_size
            download = max(0, size - partial_bytes(dest))
            if _needs_unpack(archive, options, state):
                unpack = size  # compressed audio does not shrink in an archive: unpacked ≈ archive size
        else:
            download = 0
            if _needs_unpack(archive, options, state) and dest.is_file():
                try:
                    unpack = unpacked_size(dest, archive.kind)
                except Exception:  # unreadable: the unpack step reports it
                    unpack = dest.stat().st_size
        if download or unpack:
            needs.append(SpaceNeed(archive.name, download, unpack))
    return needs


def _process(
    archive: Archive,
    folder: Path,
    info: RemoteInfo | None,
    options: DownloadOptions,
    state: _State,
    meter: ByteMeter,
    stop: threading.Event,
    outcome: Outcome,
) -> None:
    dest = folder / archive.name
    if info is not None:
        url = archive.url(options.base_url)
        result = fetch(
            url,
            dest,
            info,
            url_path=archive.url_path,
            algorithm=archive.algorithm,
            connections=options.connections,
            min_part_size=options.min_part_size,
            policy=options.policy,
            on_bytes=meter.add,
            stop=stop,
        )
        outcome.fetched, outcome.resumed_from = result.fetched, result.resumed_from
        digest = result.digest or file_checksum(dest, archive.algorithm)
        if digest != archive.checksum:
            dest.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {archive.name}: {archive.algorithm} {digest}, published {archive.checksum}; "
                "the file was removed and nothing was unpacked (run again to fetch it again)"
            )
        outcome.verified = True
    if _needs_unpack(archive, options, state):
        try:
            check_archive(dest, archive.kind, folder)
        except UnsafeArchiveError as err:
            raise DownloadError(f"unsafe archive, nothing unpacked: {err}") from None
        except Exception as err:
            raise DownloadError(f"{archive.name}: not a readable {archive.kind} archive ({err})") from None
        try:
            files = extract_archive(dest, archive.kind, folder)
        except (OSError, ValueError) as err:  # disk full, permissions, a damaged member
            raise DownloadError(f"cannot unpack {archive.name}: {err}") from None
        state.record(archive, files, folder, removed=options.remove_archives)
        outcome.extracted_files = len(files)
        if options.remove_archives:
            dest.unlink(missing_ok=True)
            outcome.removed = True


def download_archives(
    archives: list[Archive],
    folder: str | Path,
    options: DownloadOptions | None = None,
    on_ready: Callable[[Archive], None] | None = None,
) -> dict[str, Any]:
    """Fetch, verify and unpack ``archives`` into ``folder`` (see module doc); returns the report.

    Raises UserError when the disk is too small (before fetching); a failed archive does not stop the
    others and is reported with its reason."""
    options = options or DownloadOptions()
    folder = Path(folder).expanduser().absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--to {folder}: cannot create the folder ({err})") from None
    started = time.perf_counter()
    state = _State(folder)
    outcomes = {a.name: Outcome(a.name) for a in archives}
    with cf.ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="verify") as pool:
        complete = dict(
            zip(
                [a.name for a in archives],
                pool.map(lambda a: _verify_existing(a, folder, outcomes[a.name], state), archives),
                strict=True,
            )
        )
    infos: dict[str, RemoteInfo] = {}
    for archive in archives:
        if complete[archive.name]:
            continue
        try:
            infos[archive.name] = probe(archive.url(options.base_url), options.policy)
        except DownloadError as err:
            outcomes[archive.name].status, outcomes[archive.name].reason = "failed", str(err)
    check_space(
        folder,
        _space_needs(archives, folder, infos, options, state),
        transient=max(1, options.jobs) if options.remove_archives else None,
    )
    todo = [a for a in archives if outcomes[a.name].status != "failed"]
    remaining = sum(
        max(0, (a.size or infos[a.name].size or a.approx_size) - partial_bytes(folder / a.name))
        for a in todo
        if a.name in infos
    )
    meter = ByteMeter(remaining, enabled=options.progress)
    stop = threading.Event()

    def work(archive: Archive) -> Archive:
        outcome = outcomes[archive.name]
        fetch_needed = archive.name in infos
        unpack_needed = _needs_unpack(archive, options, state)
        try:
            _process(archive, folder, infos.get(archive.name), options, state, meter, stop, outcome)
        except DownloadError as err:
            outcome.status, outcome.reason = "failed", str(err)
            log.error("%s", err)
            return archive
        outcome.status = "done" if fetch_needed or unpack_needed else "complete"
        if on_ready is not None:
            on_ready(archive)
        return archive

    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="download") as pool:
            futures = [pool.submit(work, a) for a in todo]
            try:
                for future in cf.as_completed(futures):
                    future.result()
            except BaseException:
                stop.set()
                raise
    finally:
        meter.close()
    report = _report(folder, archives, outcomes, time.perf_counter() - started)
    atomic_write_json(folder / REPORT_FILE, report, fsync=False)
    return report


def _report(folder: Path, archives: list[Archive], outcomes: dict[str, Outcome], seconds: float) -> dict[str, Any]:
    rows = [asdict(outcomes[a.name]) for a in archives]
    return {
        "folder": str(folder),
        "archives": rows,
        "downloaded_bytes": sum(r["fetched"] for r in rows),
        "verified": sum(1 for r in rows if r["verified"]),
        "extracted_files": sum(r["extracted_files"] for r in rows),
        "failed": [{"name": r["name"], "reason": r["reason"]} for r in rows if r["status"] == "failed"],
        "seconds": round(seconds, 3),
    }
