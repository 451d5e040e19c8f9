"""Builders for small audio fixtures and dataset layouts (FMA, MTG-Jamendo, LJSpeech), made in code."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """A sine (channel c at ``freq * (c + 1)``): float32 ``[channels, round(seconds * sr)]``."""
    t = np.arange(int(round(seconds * sr))) / sr
    return np.stack([amp * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def write_tone(
    path: Path, seconds: float, sr: int = 22050, freq: float = 440.0, channels: int = 1, amp: float = 0.5, **kw
) -> Path:
    """Write a tone with soundfile; the format follows the suffix unless ``format=`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, freq, channels, amp).T, sr, **kw)
    return path


def write_m4a(path: Path, seconds: float, sr: int = 44100, freq: float = 440.0) -> Path:
    """AAC in an MP4 container (only PyAV/ffmpeg decodes it), mono."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    wav = tone(seconds, sr, freq)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav), format="fltp", layout="mono")
        frame.sample_rate = sr
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


FMA_TOP = ["", "album", "artist", "set", "set", "track", "track", "track", "track", "track", "track"]
FMA_SUB = ["", "title", "name", "split", "subset", "genre_top", "genres", "genres_all", "tags", "title", "duration"]


def fma_row(tid: int, title: str, artist: str, top: str, genres: str, tags: str) -> list[str]:
    return [str(tid), "Album", artist, "training", "small", top, genres, genres, tags, title, "30"]


def make_fma(root: Path, rows: list[list[str]], audio_ids: list[int], seconds: float = 6.0) -> Path:
    """An FMA layout: fma_metadata/{tracks,genres}.csv (3-row header) and fma_small/NNN/NNNNNN.mp3."""
    meta = root / "fma_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    with open(meta / "tracks.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(FMA_TOP)
        w.writerow(FMA_SUB)
        w.writerow(["track_id"] + [""] * (len(FMA_SUB) - 1))
        w.writerows(rows)
    with open(meta / "genres.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
        w.writerows(
            [
                [12, 5, 0, "Rock", 12],
                [25, 3, 12, "Punk", 12],
                [15, 4, 0, "Electronic", 15],
                [236, 2, 15, "Ambient Electronic", 15],
            ]
        )
    for i, tid in enumerate(audio_ids):
        write_tone(root / "fma_small" / f"{tid // 1000:03d}" / f"{tid:06d}.mp3", seconds, 44100, 300 + 50 * i)
    return root


def make_jamendo(root: Path, tsvs: dict[str, list[str]], audio: list[str], seconds: float = 6.0) -> Path:
    """MTG-Jamendo: ``{name: rows}`` tsv files (header added) and mp3 files at the given PATHs."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in tsvs.items():
        text = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n" + "".join(r + "\n" for r in rows)
        (root / name).write_text(text, encoding="utf-8")
    for i, rel in enumerate(audio):
        write_tone(root / rel, seconds, 44100, 330 + 40 * i)
    return root


def make_ljspeech(root: Path, lines: list[str], wavs: dict[str, float], sr: int = 22050) -> Path:
    """LJSpeech: metadata.csv with the given lines and wavs/<id>.wav of the given seconds."""
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    for i, (uid, seconds) in enumerate(wavs.items()):
        write_tone(root / "wavs" / f"{uid}.wav", seconds, sr, 200 + 20 * i)
    return root
