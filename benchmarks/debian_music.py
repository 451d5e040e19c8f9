"""Real music for the benchmarks: Debian's game-music packages, fetched with `apt-get download` and
unpacked with `dpkg -x` into a work folder (gitignored; never committed). asc-music is three GPL mp3
tracks (~18 min, 22.05 kHz stereo); the others are fallbacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGES = ("asc-music", "hyperrogue-music", "singularity-music", "warzone2100-music", "planetblupi-music-ogg")
AUDIO_SUFFIXES = (".mp3", ".ogg", ".flac")


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if root.is_dir() else []


def fetch_music(work: Path, packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    """Audio files of the first package in ``packages`` that is cached under ``work`` or downloadable;
    [] when none is (the reason is printed to stderr)."""
    for package in packages:
        root = work / package
        if files := _audio_files(root):
            return files
        debs = work / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if got.returncode != 0 or not found:
            print(f"could not download {package}: {got.stderr.strip()[-200:]}", file=sys.stderr)
            continue
        subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
        if files := _audio_files(root):
            return files
    return []
