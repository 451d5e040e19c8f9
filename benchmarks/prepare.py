"""Benchmark `tunesmith prepare` against a librosa baseline on real music (mp3 → 32 kHz mono wav).

Real audio comes from a Debian package (asc-music: three game-music mp3s, ~18 min, 22.05 kHz stereo),
fetched with `apt-get download` + `dpkg -x` into benchmarks/.work/ (gitignored); other music packages
are tried if it is unavailable, or pass your own files with --audio.

Both pipelines run in fresh subprocesses, alternating, and produce the same thing: 10 s segments
(tail kept if >= 5 s) as PCM16 wav at 32 kHz mono.
    tunesmith  prepare_dataset(files, out, workers=1)   (streaming decode, soxr HQ, sidecars, manifests)
    baseline   librosa.load(path, sr=32000, mono=True) + the same segmenting + soundfile.write
Measured per run: CPU seconds (user + system, the process and its children) for the work alone and
for the whole process (interpreter start and imports included), wall seconds, and peak RSS.
Reported: audio hours prepared per CPU hour (= x real time per core) and the tunesmith/baseline ratio,
peak memory for 1 vs N copies of the input (independence of file count) and for one long file
(1 hour; 5 min in --quick).

    python benchmarks/prepare.py            # full: all files, 3 repeats, 1-hour file
    python benchmarks/prepare.py --quick    # one file, 1 repeat, 5-minute file
Prints a markdown table and writes JSON (default benchmarks/.work/prepare/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from debian_music import fetch_music

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / ".work" / "prepare"
SR, SEGMENT, MIN_SEGMENT = 32000, 10.0, 5.0


# --------------------------------------------------------------------------- data


def make_long_file(files: list[Path], seconds: float, path: Path) -> Path:
    """An mp3 of ``seconds`` built by repeating the inputs (written once, cached)."""
    import numpy as np
    import soundfile as sf

    from tunesmith.fileio import atomic_path

    if path.is_file() and abs(sf.info(str(path)).duration - seconds) < 5:
        return path
    sr = sf.info(str(files[0])).samplerate
    channels = sf.info(str(files[0])).channels
    with atomic_path(path) as tmp, sf.SoundFile(str(tmp), "w", sr, channels, format="MP3") as out:
        written = 0
        while written < seconds * sr:
            for f in files:
                data, rate = sf.read(str(f), dtype="float32", always_2d=True)
                if rate != sr or data.shape[1] != channels:
                    continue
                take = min(len(data), int(seconds * sr) - written)
                if take <= 0:
                    break
                out.write(np.ascontiguousarray(data[:take]))
                written += take
    return path


# --------------------------------------------------------------------------- child runs


def _rusage() -> tuple[float, int]:
    """(CPU seconds of this process and its finished children, peak RSS in MiB).

    Peak RSS is this process's VmHWM (ru_maxrss would carry the parent's RSS over fork + exec)
    or, where larger, that of finished children (worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    hwm_kib = me.ru_maxrss
    try:
        status = Path("/proc/self/status").read_text()
        hwm_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    except (OSError, StopIteration, ValueError):
        pass
    return cpu, max(hwm_kib, kids.ru_maxrss) // 1024


def _warm_up(run) -> None:
    """Run a pipeline once on 0.5 s of audio so lazy imports are not counted as work."""
    import numpy as np
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "warm.wav")
        sf.write(wav, np.zeros((11025, 2), np.float32) + 0.1, 22050)
        run([wav], os.path.join(tmp, "out"))


def _tunesmith(files: list[str], out: str) -> float:
    from tunesmith.data.prepare import prepare_dataset

    summary = prepare_dataset(
        files, out, sample_rate=SR, segment=SEGMENT, min_segment=MIN_SEGMENT, workers=1, progress=False
    )
    return summary["hours"]["total"] * 3600


def _baseline(files: list[str], out: str) -> float:
    import librosa
    import numpy as np
    import soundfile as sf

    seconds_out = 0.0
    seg, min_seg = int(SEGMENT * SR), int(MIN_SEGMENT * SR)
    Path(out).mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        y, _ = librosa.load(f, sr=SR, mono=True)
        for k, start in enumerate(range(0, len(y), seg)):
            piece = y[start : start + seg]
            if len(piece) < min_seg:
                continue
            sf.write(os.path.join(out, f"{i:04d}_{k:05d}.wav"), np.asarray(piece), SR, subtype="PCM_16")
            seconds_out += len(piece) / SR
    return seconds_out


def child(kind: str, files: list[str], out: str) -> dict:
    """Run one pipeline in this (fresh) process and return its measurements."""
    import soundfile as sf

    run = _tunesmith if kind == "tunesmith" else _baseline
    _warm_up(run)
    cpu0, _ = _rusage()
    wall0 = time.perf_counter()
    seconds_out = run(files, out)
    wall = time.perf_counter() - wall0
    cpu1, peak = _rusage()
    audio_in = sum(sf.info(f).duration for f in files)
    return {
        "kind": kind,
        "audio_seconds_in": audio_in,
        "audio_seconds_out": seconds_out,
        "cpu_work_s": cpu1 - cpu0,
        "wall_work_s": wall,
        "peak_rss_mib": peak,
    }


def run_child(kind: str, files: list[Path], out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    env = dict(os.environ, TUNESMITH_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--out", str(out), *map(str, files)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["cpu_total_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result["wall_total_s"] = wall
    shutil.rmtree(out, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- report


def rt(result: dict, cpu_key: str) -> float:
    """Audio hours prepared per CPU hour (x real time per core)."""
    return result["audio_seconds_in"] / result[cpu_key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one file, one repeat, 5-minute long file")
    parser.add_argument("--repeat", type=int, default=None, help="runs per pipeline (median taken); default 3, 1 quick")
    parser.add_argument("--audio", nargs="*", type=Path, help="use these files instead of the Debian package")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="cache and scratch folder")
    parser.add_argument("--json", type=Path, default=None, help="results file (default WORK/results.json)")
    parser.add_argument("--copies", type=int, default=None, help="copies for the file-count test (default 6, 3 quick)")
    parser.add_argument("--child", choices=("tunesmith", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.files, args.out)))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    files = args.audio or fetch_music(args.work)
    if not files:
        raise SystemExit("no music package could be fetched; pass --audio FILE...")
    if args.quick:
        files = files[:1]
    repeat = args.repeat or (1 if args.quick else 3)
    copies = args.copies or (3 if args.quick else 6)
    long_seconds = 300.0 if args.quick else 3600.0
    scratch = Path(tempfile.mkdtemp(prefix="bench-prepare-", dir=args.work))
    try:
        runs: dict[str, list[dict]] = {"tunesmith": [], "baseline": []}
        for _ in range(repeat):  # alternate so that machine noise hits both alike
            for kind in ("tunesmith", "baseline"):
                runs[kind].append(run_child(kind, files, scratch / kind))
        med = {
            kind: {key: statistics.median(r[key] for r in rs) for key in rs[0] if key != "kind"}
            for kind, rs in runs.items()
        }
        # peak memory vs number of files: the same files linked under N names
        many_dir = scratch / "many"
        many_dir.mkdir()
        many = []
        for c in range(copies):
            for f in files:
                link = many_dir / f"copy{c}_{f.name}"
                os.symlink(f.resolve(), link)
                many.append(link)
        mem_many = {kind: run_child(kind, many, scratch / f"{kind}_many") for kind in ("tunesmith", "baseline")}
        long_file = make_long_file(files, long_seconds, args.work / f"long_{int(long_seconds)}s.mp3")
        mem_long = {kind: run_child(kind, [long_file], scratch / f"{kind}_long") for kind in ("tunesmith", "baseline")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    audio_min = med["tunesmith"]["audio_seconds_in"] / 60
    results = {
        "benchmark": "prepare",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "input": {"files": [str(f) for f in files], "audio_minutes": round(audio_min, 2)},
        "repeat": repeat,
        "runs": runs,
        "median": med,
        "x_realtime_per_core": {
            kind: {"work": round(rt(m, "cpu_work_s"), 1), "whole_process": round(rt(m, "cpu_total_s"), 1)}
            for kind, m in med.items()
        },
        "ratio_tunesmith_over_baseline": {
            "work": round(med["baseline"]["cpu_work_s"] / med["tunesmith"]["cpu_work_s"], 3),
            "whole_process": round(med["baseline"]["cpu_total_s"] / med["tunesmith"]["cpu_total_s"], 3),
        },
        "peak_rss_mib": {
            kind: {
                "one_copy": round(med[kind]["peak_rss_mib"]),
                f"{copies}_copies": mem_many[kind]["peak_rss_mib"],
                f"long_{int(long_seconds)}s_file": mem_long[kind]["peak_rss_mib"],
            }
            for kind in ("tunesmith", "baseline")
        },
        "long_file_x_realtime_per_core": {kind: round(rt(mem_long[kind], "cpu_work_s"), 1) for kind in mem_long},
    }
    out_json = args.json or args.work / "results.json"
    out_json.write_text(json.dumps(results, indent=1) + "\n")

    x, ratio, mem = results["x_realtime_per_core"], results["ratio_tunesmith_over_baseline"], results["peak_rss_mib"]
    print(f"\nprepare: {len(files)} file(s), {audio_min:.1f} min of mp3 → 32 kHz mono wav, median of {repeat}\n")
    print("| pipeline | × real time per core (work) | × real time per core (whole process) | peak RSS MiB "
          f"(1 copy / {copies} copies / {long_seconds / 60:.0f}-min file) |")  # fmt: skip
    print("|---|---|---|---|")
    for kind in ("tunesmith", "baseline"):
        m = mem[kind]
        print(
            f"| {kind} | {x[kind]['work']:.0f} | {x[kind]['whole_process']:.0f} | "
            f"{m['one_copy']} / {m[f'{copies}_copies']} / {m[f'long_{int(long_seconds)}s_file']} |"
        )
    print(f"| ratio tunesmith/baseline | {ratio['work']:.2f} | {ratio['whole_process']:.2f} | |")
    print(f"\nresults: {out_json}")


if __name__ == "__main__":
    main()
