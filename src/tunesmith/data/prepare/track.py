"""One track → its segments (audio + sidecar) under ``DIR/segments/<track>/`` and a completion record
(its split is decided for the whole dataset by ``split.assign_splits`` and added by ``prepare_dataset``)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.manifest import SEGMENTS_DIR
from tunesmith.data.prepare.settings import OutputError
from tunesmith.data.sources import TOO_LONG, Track, track_key
from tunesmith.errors import UserError
from tunesmith.fileio import atomic_write_text

log = logging.getLogger("tunesmith.data.prepare")


def _segment_blocks(blocks: Iterable[np.ndarray], channels: int, seg_frames: int) -> Iterator[np.ndarray]:
    """Regroup ``[C, n]`` blocks into ``[C, seg_frames]`` segments; the last one may be shorter."""
    buf = np.empty((channels, seg_frames), np.float32)
    fill = 0
    for block in blocks:
        pos = 0
        while pos < block.shape[1]:
            take = min(seg_frames - fill, block.shape[1] - pos)
            buf[:, fill : fill + take] = block[:, pos : pos + take]
            fill += take
            pos += take
            if fill == seg_frames:
                yield buf.copy()
                fill = 0
    if fill:
        yield buf[:, :fill].copy()


def _array_blocks(wav: np.ndarray, block: int = 1 << 16) -> Iterator[np.ndarray]:
    for start in range(0, wav.shape[1], block):
        yield wav[:, start : start + block]


def _rms_db(seg: np.ndarray) -> float:
    """RMS level of ``[C, n]`` in dBFS (-inf for digital silence)."""
    flat = np.ascontiguousarray(seg).ravel()
    rms = math.sqrt(float(np.dot(flat, flat)) / max(1, flat.size))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def process_track(track: dict[str, Any], settings: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Decode, convert and cut one track into ``DIR/segments/<key>/``; return its completion record.

    Never raises for a bad input: a problem becomes ``{"status": "rejected", "reason": ...}``. A transcribed
    utterance (``track.whole``) becomes one segment, never cut: longer than ``settings["max_seconds"]`` (when
    set, else ``settings["segment"]``) it is rejected with ``"code": "too_long"``.
    """
    from tunesmith.audio.io import AudioStream, save_audio

    t = Track(**track)
    key = track_key(t)
    rel_dir = f"{SEGMENTS_DIR}/{key}"
    seg_dir = Path(out_dir) / rel_dir
    if seg_dir.exists():  # leftovers of an interrupted attempt: never referenced by a manifest
        shutil.rmtree(seg_dir)
    base = {"track_id": t.track_id, "key": key, "fingerprint": t.fingerprint(), "file": t.audio or t.track_id}
    sr, channels = settings["sample_rate"], settings["channels"]
    seg_frames = int(round(settings["segment"] * sr))
    min_frames = max(1, int(round(settings["min_segment"] * sr)))

    def reject(reason: str, **extra: Any) -> dict[str, Any]:
        if seg_dir.exists():
            shutil.rmtree(seg_dir, ignore_errors=True)
        return {**base, "status": "rejected", "reason": reason, **extra}

    try:
        stream = None
        if t.synth is not None:
            from tunesmith.data.synthetic import render_track

            blocks: Iterable[np.ndarray] = _array_blocks(render_track(t.synth, sr, channels))
        else:
            stream = AudioStream(t.audio, sr, channels)
            blocks = stream
        segments: list[list[Any]] = []
        silent = 0
        frames_out = 0
        tail_dropped = 0.0
        if t.whole:  # transcribed utterance: one segment, never cut
            parts = []
            max_seconds = settings.get("max_seconds")
            limit_frames = int(round(max_seconds * sr)) if max_seconds else seg_frames
            for block in blocks:
                parts.append(block)
                frames_out += block.shape[1]
                if frames_out > limit_frames:
                    declared = stream.info.duration if stream is not None else None
                    length = f" ({declared:.2f} s)" if declared else ""
                    if max_seconds:
                        what = f"longer than --max-seconds {max_seconds:g} s{length}"
                    else:
                        what = f"longer than --segment {settings['segment']:g} s{length}"
                    return reject(f"{what}; a transcribed utterance is never cut", code=TOO_LONG)
            pieces: Iterable[np.ndarray] = [np.concatenate(parts, axis=1)] if parts else []
        else:
            pieces = _segment_blocks(blocks, channels, seg_frames)
        for index, seg in enumerate(pieces):
            n = seg.shape[1]
            if not t.whole:
                frames_out += n
                if n < min_frames:
                    tail_dropped = n / sr
                    continue
            if _rms_db(seg) < settings["silence_db"]:
                silent += 1
                continue
            name = f"{index:05d}"
            info = dict(t.meta)
            info.update(track_id=t.track_id, name=info.get("name") or t.name, segment_index=index)
            info.update(start=round(index * settings["segment"], 6) if not t.whole else 0.0, source=t.kind)
            sidecar = json.dumps(info, ensure_ascii=False, indent=1) + "\n"
            try:
                save_audio(seg_dir / f"{name}.{settings['format']}", seg, sr)
                atomic_write_text(seg_dir / f"{name}.json", sidecar, fsync=False)
            except OSError as err:  # the output's fault (disk full, permissions), not the input's: stop
                fix = "free space or fix permissions, then re-run"
                raise OutputError(f"cannot write into {seg_dir}: {err}; {fix}") from None
            segments.append([f"{rel_dir}/{name}.{settings['format']}", n / sr, round(float(np.abs(seg).max()), 6)])
        if stream is not None and stream.truncated:
            declared = stream.info.duration or 0.0
            got = stream.frames_in / stream.info.sample_rate
            return reject(f"truncated: the header declares {declared:.2f} s but only {got:.2f} s could be decoded")
        if frames_out == 0:
            return reject("empty: contains no audio frames")
        if not segments:
            seconds = frames_out / sr
            if not t.whole and frames_out < min_frames:
                return reject(f"too short: {seconds:.2f} s < --min-segment {settings['min_segment']:g} s")
            return reject(f"near-silent: every segment is below {settings['silence_db']:g} dBFS RMS", silent=silent)
        return {
            **base,
            "status": "done",
            "segments": segments,
            "silent": silent,
            "seconds": frames_out / sr,
            "tail_dropped": tail_dropped,
            "described": bool(str(t.meta.get("description") or "").strip()),
            "genre": str(t.meta.get("genre") or ""),
        }
    except UserError as err:
        if isinstance(err, OutputError):
            raise
        message = str(err)
        if t.audio and message.startswith(t.audio + ": "):
            message = message[len(t.audio) + 2 :]
        return reject(message)
    except Exception as err:  # a decoder or library failure on one file must not stop the run
        log.debug("track %s failed", t.track_id, exc_info=True)
        return reject(f"error while processing: {type(err).__name__}: {err}")
