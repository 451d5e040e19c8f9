"""A loopback HTTP mirror for download tests, and FMA / MTG-Jamendo archives in their real layouts.

:class:`Mirror` serves a folder on 127.0.0.1 with Python's own ``http.server``: GET and HEAD, single byte
ranges (``Range: bytes=a-b``, ``If-Range`` on the ETag), and it counts what it does — every request
(method, path, Range header, status) and the body bytes sent per path — so tests can tell what was
fetched twice. Faults for a path are queued with :meth:`Mirror.fail` (an HTTP status) and
:meth:`Mirror.drop` (close the connection after N body bytes); ``throttle`` slows every body down.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile as sf

from support.audio import FMA_SUB, FMA_TOP, fma_row


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int


class Mirror:
    """``root`` served at :attr:`url`; use as a context manager (or :meth:`start` / :meth:`stop`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[Request] = []
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()
        self.faults: dict[str, list[tuple[str, int]]] = {}
        self.throttle: tuple[int, float] | None = None  # (bytes per write, seconds after each write)
        self.ranges = True  # False: a server that ignores Range and says nothing of Accept-Ranges
        self.epoch = 0  # bumped by reset_counts: bytes of a response begun before it are not counted after it
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> Mirror:
        mirror = self

        class Handler(_Handler):
            pass

        Handler.mirror = mirror
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> Mirror:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, path: str, status: int, times: int = 1) -> None:
        """Answer the next ``times`` GETs of ``path`` with ``status``."""
        self.faults.setdefault(path, []).extend([("status", status)] * times)

    def drop(self, path: str, after: int) -> None:
        """Close the connection of the next GET of ``path`` after ``after`` body bytes."""
        self.faults.setdefault(path, []).append(("drop", after))

    def reset_counts(self) -> None:
        """Forget the requests and bytes so far. A response still being written (to a client that was killed:
        the kernel may take one more chunk before the reset arrives) keeps counting into the old epoch only."""
        with self.lock:
            self.requests.clear()
            self.sent.clear()
            self.epoch += 1

    def gets(self, path: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and (path is None or r.path == path)]


class _Handler(BaseHTTPRequestHandler):
    mirror: Mirror
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _record(self, status: int) -> None:
        with self.mirror.lock:
            self.mirror.requests.append(Request(self.command, self.path, self.headers.get("Range"), status))

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        mirror = self.mirror
        epoch = mirror.epoch
        rel = self.path.lstrip("/")
        file = mirror.root / rel
        if ".." in rel.split("/") or not file.is_file():
            self._record(404)
            self.send_error(404)
            return
        fault = None
        if body:
            with mirror.lock:
                queue = mirror.faults.get(self.path)
                if queue:
                    fault = queue.pop(0)
        if fault and fault[0] == "status":
            self._record(fault[1])
            self.send_response(fault[1])
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        data = file.read_bytes()
        etag = '"' + hashlib.sha1(data).hexdigest() + '"'
        start, end, status = 0, len(data), 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and mirror.ranges and (if_range is None or if_range == etag):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if not match or int(match.group(1)) >= len(data):
                self._record(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(match.group(1))
            end = min(len(data), int(match.group(2)) + 1) if match.group(2) else len(data)
            status = 206
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        if mirror.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Connection", "close")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        limit = end
        if fault and fault[0] == "drop":
            limit = min(end, start + fault[1])
        step, pause = mirror.throttle or (1 << 20, 0.0)
        pos = start
        try:
            while pos < limit:
                chunk = data[pos : min(limit, pos + step)]
                self.wfile.write(chunk)
                self.wfile.flush()
                pos += len(chunk)
                with mirror.lock:
                    if epoch == mirror.epoch:
                        mirror.sent[self.path] = mirror.sent.get(self.path, 0) + len(chunk)
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


# ---------------------------------------------------------------------- archives in the real layouts


def synthetic_mp3(path: Path, index: int, seconds: float = 2.0, sr: int = 22050) -> Path:
    """An mp3 of tunesmith's synthetic track ``index`` (seed 0)."""
    from tunesmith.data.synthetic import render_track, track_params

    wav = render_track(track_params(index, 0, seconds), sr, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.ascontiguousarray(wav.T), sr, format="MP3")
    return path


def _zip_folder(zip_path: Path, root: Path, folder: str, extra: dict[str, bytes] | None = None) -> Path:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted((root / folder).rglob("*")):
            zf.write(file, file.relative_to(root).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return zip_path


FMA_GENRES = [(12, "Rock"), (15, "Electronic"), (17, "Folk"), (21, "Hip-Hop")]


def fma_archives(mirror_root: Path, work: Path, track_ids: list[int], seconds: float = 2.0) -> dict[str, Path]:
    """``fma_metadata.zip`` (fma_metadata/tracks.csv with FMA's 3-row header, genres.csv) and ``fma_small.zip``
    (fma_small/NNN/NNNNNN.mp3, README.txt, checksums) in ``mirror_root``; track i gets genre i % 4."""
    meta = work / "fma_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    with open(meta / "tracks.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(FMA_TOP)
        w.writerow(FMA_SUB)
        w.writerow(["track_id"] + [""] * (len(FMA_SUB) - 1))
        for i, tid in enumerate(track_ids):
            gid, genre = FMA_GENRES[i % len(FMA_GENRES)]
            w.writerow(fma_row(tid, f"Song {tid}", f"Artist {i % 3}", genre, f"[{gid}]", "['demo']"))
    with open(meta / "genres.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
        w.writerows([[gid, 1, 0, name, gid] for gid, name in FMA_GENRES])
    sums = []
    for i, tid in enumerate(track_ids):
        mp3 = synthetic_mp3(work / "fma_small" / f"{tid // 1000:03d}" / f"{tid:06d}.mp3", i, seconds)
        sums.append(f"{hashlib.sha1(mp3.read_bytes()).hexdigest()}  {tid // 1000:03d}/{tid:06d}.mp3")
    (work / "fma_small" / "README.txt").write_text("FMA small (test fixture)\n", encoding="utf-8")
    (work / "fma_small" / "checksums").write_text("\n".join(sums) + "\n", encoding="utf-8")
    return {
        "fma_metadata.zip": _zip_folder(mirror_root / "fma_metadata.zip", work, "fma_metadata"),
        "fma_small.zip": _zip_folder(mirror_root / "fma_small.zip", work, "fma_small"),
    }


JAMENDO_TAGS = ["genre---rock\tinstrument---guitar", "genre---electronic\tmood/theme---calm", "genre---jazz"]


def jamendo_archives(mirror_root: Path, work: Path, parts: dict[int, list[int]], seconds: float = 2.0) -> dict:
    """MTG-Jamendo raw_30s/audio-low: tars ``raw_30s_audio-low-NN.tar`` (folder ``NN/``, files
    ``NN/<id>.low.mp3``, tracks with ``id % 100 == NN``) under ``raw_30s/audio-low/`` and the metadata
    ``data/raw_30s_cleantags_50artists.tsv`` (header TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS)."""
    lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    out: dict[str, Path] = {}
    index = 0
    for part, ids in sorted(parts.items()):
        folder = f"{part:02d}"
        tar_path = mirror_root / "raw_30s" / "audio-low" / f"raw_30s_audio-low-{part:02d}.tar"
        tar_path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar_path, "w") as tf:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
            for tid in ids:
                assert tid % 100 == part
                mp3 = synthetic_mp3(work / folder / f"{tid}.low.mp3", index, seconds)
                tf.add(mp3, f"{folder}/{tid}.low.mp3")
                tags = JAMENDO_TAGS[index % len(JAMENDO_TAGS)]
                lines.append(
                    f"track_{tid:07d}\tartist_{index:06d}\talbum_{index:06d}\t{folder}/{tid}.mp3\t{seconds}\t{tags}"
                )
                index += 1
        out[tar_path.name] = tar_path
    tsv = mirror_root / "data" / "raw_30s_cleantags_50artists.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out["autotagging.tsv"] = tsv
    return out


def checksum_list(path: Path, files: dict[str, Path], sizes: dict[str, int] | None = None) -> Path:
    """A ``sha256sum``-style list (``HEX  NAME``, plus ``  BYTES`` for the names in ``sizes``)."""
    lines = []
    for name, file in files.items():
        line = f"{hashlib.sha256(file.read_bytes()).hexdigest()}  {name}"
        if sizes and name in sizes:
            line += f"  {sizes[name]}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def zip_with_entry(path: Path, good: dict[str, bytes], bad_name: str) -> Path:
    """A zip holding ``good`` files and one entry named ``bad_name`` (e.g. ``../evil.txt``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in good.items():
            zf.writestr(name, data)
        zf.writestr(zipfile.ZipInfo(bad_name), b"escaped\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path
