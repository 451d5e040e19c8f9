"""Benchmark tunesmith's codec: training step time against AudioCraft, encode throughput, quality.

Sections (all by default; pick with --sections):

    train    median wall time of one codec update (generator + discriminator, balanced losses) at
             MusicGen's 32 kHz EnCodec configuration (the encodec-32khz preset: SEANet 64 filters,
             strides 8*5*4*4, 2-layer LSTM, 4 x 2048 RVQ, 5-scale MS-STFT discriminator, losses adv 4,
             feat 4, l1 0.1, multi-scale mel 2, balancer on), tunesmith's CodecSolver.train_update
             against AudioCraft 1.3.0's compression model and losses (benchmarks/peers/audiocraft_peer.py
             codec-train, run with the peer venv). Fresh processes, alternating. Goal: ratio <= 1.0.
    encode   EncodecModel.encode vs CodecModel.encode on 30 s items (same shape, random weights), and the
             token cache end to end (tunesmith encode of a prepared dataset): audio seconds per wall second
             and per CPU second.
    quality  `tunesmith train codec tiny` (the demo's codec budget) on synthetic music, then SI-SNR (dB,
             higher is better) and mel distance (lower is better) on held-out synthetic clips and on real
             music (the Debian package asc-music, fetched with apt-get download + dpkg -x), beside Opus
             (libopus through PyAV) at its lowest bitrates, on the same clips at the same sample rate.

    python benchmarks/codec.py                 # full
    python benchmarks/codec.py --quick         # small shapes and budgets: checks that everything runs

Prints markdown tables and writes JSON (default benchmarks/.work/codec/results.json). Timings are only
meaningful on an idle machine: check `uptime` first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from debian_music import fetch_music

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "codec"
PEER_PY = HERE / ".work" / "audiocraft-venv" / "bin" / "python"
PEER_CLI = HERE / "peers" / "audiocraft_peer.py"

# MusicGen's 32 kHz EnCodec as both sides build it (encodec-32khz preset = AudioCraft's defaults)
FULL_SHAPE = {"batch": 4, "segment": 1.0, "steps": 5, "warmup": 1, "repeats": 2}
QUICK_SHAPE = {"batch": 1, "segment": 0.5, "steps": 1, "warmup": 1, "repeats": 1}


def python() -> str:
    return sys.executable


# --------------------------------------------------------------------------- helpers


def synthetic_batch(batch: int, samples: int, sample_rate: int, seed: int):
    """[batch, 1, samples]: a random-pitch harmonic tone plus noise (the peer feeds the same kind of audio)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples, dtype=torch.float32) / sample_rate
    f0 = 80.0 + 400.0 * torch.rand(batch, 1, 1, generator=gen)
    tone = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in (1, 2, 3))
    return 0.25 * tone + 0.05 * torch.randn(batch, 1, samples, generator=gen)


def run_json(cmd: list[str], env: dict | None = None, timeout: float = 3600) -> dict[str, Any]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    text = done.stdout.strip()
    try:
        return json.loads(text)  # one (possibly indented) JSON document
    except json.JSONDecodeError:
        return json.loads(text.splitlines()[-1])  # log lines, then the JSON on the last line


def peer_available() -> bool:
    return PEER_PY.is_file() and PEER_CLI.is_file()


def prepared_synthetic(out: Path, sample_rate: int, tracks: int, seconds: float) -> Path:
    from tunesmith.data.prepare import prepare_dataset

    if not (out / "dataset.json").is_file():
        prepare_dataset(
            [],
            out,
            source="synthetic",
            num_tracks=tracks,
            track_duration=seconds,
            sample_rate=sample_rate,
            segment=min(10.0, seconds),
            min_segment=min(5.0, seconds),
            valid_fraction=0.2,
            progress=False,
        )
    return out


# --------------------------------------------------------------------------- children (fresh processes)


def child_train_step(args: argparse.Namespace) -> dict[str, Any]:
    """tunesmith's CodecSolver.train_update at the encodec-32khz preset, timed like the peer times its step."""
    import torch

    torch.set_num_threads(args.threads)
    from tunesmith.tasks import build_solver

    data = prepared_synthetic(WORK / "data32k", 32000, 4, 2.0)
    overrides = [
        f"data={data}",
        f"dataset.batch_size={args.batch}",
        f"dataset.segment_seconds={args.segment}",
        "train.log.progress=false",
        "train.log.tensorboard=false",
        "train.ema.enabled=false",
    ]
    solver = build_solver("codec", "encodec-32khz", overrides, runs_dir=WORK / "runs", fresh=True)
    solver.setup()
    samples = round(args.segment * 32000)
    batches = [synthetic_batch(args.batch, samples, 32000, args.seed + i) for i in range(args.warmup + args.steps)]
    times, cpu_times = [], []
    metrics: dict[str, float] = {}
    for i, x in enumerate(batches):
        start, cpu = time.perf_counter(), time.process_time()
        metrics = solver.train_update([x])
        solver.step += 1
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
    median = statistics.median(times)
    return {
        "side": "tunesmith",
        "torch_threads": torch.get_num_threads(),
        "step_times_s": [round(t, 4) for t in times],
        "median_step_s": round(median, 4),
        "cpu_per_wall": round(sum(cpu_times) / sum(times), 3),
        "parameters": sum(p.numel() for p in solver.model.parameters()),
        "discriminator_parameters": sum(p.numel() for p in solver.extras["discriminator"].parameters()),
        "audio_seconds_per_s": round(args.batch * args.segment / median, 3),
        "last_step_metrics": {k: round(v, 5) for k, v in metrics.items()},
    }


def child_encode(args: argparse.Namespace) -> dict[str, Any]:
    """CodecModel.encode on one item of ``--seconds`` at the encodec-32khz shape (random weights)."""
    import torch

    torch.set_num_threads(args.threads)
    from tunesmith.config import resolve
    from tunesmith.models.codec import CodecModel
    from tunesmith.tasks.codec import CodecConfig

    torch.manual_seed(args.seed)
    model = CodecModel(resolve("codec", CodecConfig, "encodec-32khz", []).config.model)
    model.train()
    with torch.no_grad():  # k-means init of the codebooks, as the peer does
        model(synthetic_batch(2, 32000, 32000, args.seed))
    model.eval()
    audio = synthetic_batch(1, round(args.seconds * 32000), 32000, args.seed + 1)
    times, cpu_times = [], []
    for i in range(args.warmup + args.steps):
        start, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            codes = model.encode(audio)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
    median = statistics.median(times)
    return {
        "side": "tunesmith",
        "median_step_s": round(median, 4),
        "cpu_per_wall": round(sum(cpu_times) / sum(times), 3),
        "codes_shape": list(codes.shape),
        "audio_seconds_per_s": round(args.seconds / median, 3),
    }


# --------------------------------------------------------------------------- sections


def section_train(args: argparse.Namespace, shape: dict) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    step_args = ["--threads", str(args.threads), "--batch", str(shape["batch"]), "--segment", str(shape["segment"])]
    step_args += ["--steps", str(shape["steps"]), "--warmup", str(shape["warmup"])]
    ours_cmd = [python(), __file__, "--child", "train-step", *step_args]
    peer_cmd = [str(PEER_PY), str(PEER_CLI), "codec-train", *step_args]
    runs: dict[str, list[dict]] = {"tunesmith": [], "audiocraft": []}
    for _ in range(shape["repeats"]):  # alternate so both sides see the same machine state
        runs["tunesmith"].append(run_json(ours_cmd, env))
        if peer_available() and not args.skip_peer:
            runs["audiocraft"].append(run_json(peer_cmd, {**os.environ, "USER": os.environ.get("USER", "bench")}))
    result: dict[str, Any] = {"shape": shape, "runs": runs}
    for side, reports in runs.items():
        if reports:
            result[f"{side}_median_step_s"] = statistics.median(r["median_step_s"] for r in reports)
            result[f"{side}_cpu_per_wall"] = statistics.median(r["cpu_per_wall"] for r in reports)
    if runs["audiocraft"]:
        result["ratio"] = round(result["tunesmith_median_step_s"] / result["audiocraft_median_step_s"], 3)
    return result


def section_encode(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    seconds, steps = (5.0, 1) if quick else (30.0, 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result: dict[str, Any] = {"seconds_per_item": seconds}
    ours = [
        python(),
        __file__,
        "--child",
        "encode",
        "--threads",
        str(args.threads),
        "--seconds",
        str(seconds),
        "--steps",
        str(steps),
        "--warmup",
        "1",
    ]
    peer = [
        str(PEER_PY),
        str(PEER_CLI),
        "codec-encode",
        "--threads",
        str(args.threads),
        "--seconds",
        str(seconds),
        "--steps",
        str(steps),
        "--warmup",
        "1",
    ]
    result["tunesmith"] = run_json(ours, env)
    if peer_available() and not args.skip_peer:
        result["audiocraft"] = run_json(peer, {**os.environ, "USER": os.environ.get("USER", "bench")})
    result["token_cache"] = token_cache_throughput(args, quick)
    return result


def token_cache_throughput(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    """`tunesmith encode` (fresh cache) of a prepared 32 kHz dataset with an encodec-32khz-shaped codec."""
    import torch

    from tunesmith.artifacts.checkpoint import save_checkpoint
    from tunesmith.config import resolve
    from tunesmith.models.codec import CodecModel
    from tunesmith.tasks.codec import CodecConfig

    tracks, seconds = (2, 20.0) if quick else (12, 30.0)
    data = prepared_synthetic(WORK / f"encode-data-{tracks}x{int(seconds)}", 32000, tracks, seconds)
    codec_dir = WORK / "encode-codec"
    if not (codec_dir / "manifest.json").is_file():
        torch.manual_seed(0)
        model = CodecModel(resolve("codec", CodecConfig, "encodec-32khz", []).config.model)
        config = {"meta": {"task": "codec"}, "config": {"model": model.config_dict()}}
        save_checkpoint(codec_dir, weights={"model": model.state_dict()}, state={"step": 0, "epoch": 0}, config=config)
    shutil.rmtree(data / "tokens", ignore_errors=True)
    cmd = [python(), "-m", "tunesmith", "encode", str(data), "--codec", str(codec_dir), "--json", "--batch-size", "8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    before = os.times()
    summary = run_json(cmd, env)
    after = os.times()
    wall = time.perf_counter() - start
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    audio = sum(s["audio_seconds"] for s in summary["splits"].values())
    encode_wall = sum(s["wall_seconds"] for s in summary["splits"].values())
    crops_per_s = reader_crops_per_second(Path(summary["cache"]))
    return {
        "reader_crops_per_s": crops_per_s,
        "audio_seconds": round(audio, 1),
        "encode_wall_s": round(encode_wall, 2),
        "process_wall_s": round(wall, 2),
        "process_cpu_s": round(cpu, 2),
        "audio_seconds_per_s": round(audio / encode_wall, 2) if encode_wall else None,
        "audio_seconds_per_cpu_s": round(audio / cpu, 2) if cpu else None,
    }


def reader_crops_per_second(cache: Path, frames: int = 250, count: int = 5000) -> float:
    """Random ``frames``-long crops per second from a fresh TokenShards (memory-mapped, no decoding)."""
    import numpy as np

    from tunesmith.data.token_cache import TokenShards

    shards = TokenShards(cache, "train")
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(shards), count)
    start = time.perf_counter()
    for i in picks:
        window, _ = shards.crop(int(i), frames, rng)
        window.astype(np.int64)  # what a data loader hands to torch
    return round(count / (time.perf_counter() - start), 1)


def opus_round_trip(wav, sample_rate: int, kbps: float):
    """Encode/decode a mono float32 [T] signal with libopus at ``kbps`` through PyAV; returns [T] aligned to input."""
    import av
    import numpy as np

    out = av.open(os.devnull, "w", format="ogg")  # the container only frames packets; we decode from them
    stream = out.add_stream("libopus", rate=sample_rate)
    stream.bit_rate = int(kbps * 1000)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(wav[None].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = sample_rate
    packets = list(stream.encode(frame)) + list(stream.encode(None))
    decoder = av.CodecContext.create("libopus", "r")
    decoder.layout = "mono"
    pieces, rate = [], sample_rate
    for packet in packets:
        for decoded in decoder.decode(packet):  # libopus decodes at 48 kHz whatever the input rate
            data = decoded.to_ndarray().reshape(-1)
            pieces.append(data.astype(np.float32) / 32768.0 if data.dtype == np.int16 else data.astype(np.float32))
            rate = decoded.sample_rate
    out.close()
    decoded = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if rate != sample_rate:
        from tunesmith.audio.io import resample

        decoded = resample(decoded[None], rate, sample_rate)[0]
    return align(wav, decoded)


def align(ref, est, max_lag: int = 2000):
    """``est`` shifted by the lag (0..max_lag samples of codec delay) that best matches ``ref``, cut to its length."""
    import numpy as np

    best, best_score = 0, -np.inf
    n = len(ref)
    for lag in range(0, min(max_lag, max(len(est) - 1, 0)) + 1):
        seg = est[lag : lag + n]
        m = min(len(seg), n)
        score = float(np.dot(ref[:m], seg[:m]))
        if score > best_score:
            best, best_score = lag, score
    seg = est[best : best + n]
    return np.pad(seg, (0, n - len(seg))).astype(np.float32)


def section_quality(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    from tunesmith.audio.io import load_audio
    from tunesmith.audio.metrics import mel_distance, si_snr
    from tunesmith.eval.codec import check_codec, select_clips
    from tunesmith.models.codec import load_codec

    torch.set_num_threads(args.threads)
    data = prepared_synthetic(
        WORK / ("quality-data-quick" if quick else "quality-data"), 16000, 8 if quick else 40, 8.0
    )
    runs = WORK / "quality-runs"
    overrides = ["train.max_steps=10", "check.num_samples=2"] if quick else []
    cmd = [
        python(),
        "-m",
        "tunesmith",
        "train",
        "codec",
        "tiny",
        f"data={data}",
        "train.log.progress=false",
        *overrides,
        "--runs-dir",
        str(runs),
        "--fresh",
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    trained = run_json(cmd, env)
    train_wall = time.perf_counter() - start
    codec = load_codec(trained["run_dir"])
    sets: dict[str, list] = {"synthetic (held out)": select_clips(data, 4 if quick else 20, 16000, 1, "valid", 4.0)}
    music = [] if args.no_music else fetch_music(WORK / "music")
    if music:
        from tunesmith.eval.codec import Clip

        clips = []
        per_file = 2 if quick else 4
        for path in music:
            wav, _ = load_audio(path, sample_rate=16000, channels=1)
            starts = np.linspace(0.1, 0.8, per_file) * wav.shape[1]
            clips += [Clip(f"{path.stem}@{int(s) / 16000:.0f}s", wav[:, int(s) : int(s) + 4 * 16000]) for s in starts]
        sets["real music (asc-music)"] = clips
    rows = []
    for name, clips in sets.items():
        for kbps in sorted(codec.supported_bandwidths)[-2:]:
            codec.set_bandwidth(kbps)
            mean = check_codec(codec, clips).mean
            rows.append(
                {
                    "set": name,
                    "codec": f"tunesmith tiny ({len(clips)} clips)",
                    "kbps": kbps,
                    "sisnr": mean["sisnr"],
                    "mel": mean["mel"],
                }
            )
        for kbps in (6.0, 8.0):
            ref = torch.stack([torch.from_numpy(c.wav[0]) for c in clips])[:, None]
            est = torch.stack([torch.from_numpy(opus_round_trip(c.wav[0], 16000, kbps)) for c in clips])[:, None]
            rows.append(
                {
                    "set": name,
                    "codec": f"Opus (libopus, {len(clips)} clips)",
                    "kbps": kbps,
                    "sisnr": float(si_snr(ref, est).mean()),
                    "mel": float(mel_distance(ref, est, 16000).mean()),
                }
            )
    return {
        "train_wall_s": round(train_wall, 1),
        "train_steps": trained["step"],
        "run_dir": trained["run_dir"],
        "rows": rows,
    }


# --------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    lines = []
    train = results.get("train")
    if train:
        lines += [
            "### Codec training step (encodec-32khz shape, generator + discriminator)",
            "",
            f"batch {train['shape']['batch']} x {train['shape']['segment']} s, {results['threads']} threads, "
            f"median of {train['shape']['steps']} steps x {train['shape']['repeats']} runs",
            "",
            "| side | median step (s) | CPU/wall | audio s per s |",
            "| --- | --- | --- | --- |",
        ]
        for side in ("tunesmith", "audiocraft"):
            if f"{side}_median_step_s" in train:
                step = train[f"{side}_median_step_s"]
                audio = train["shape"]["batch"] * train["shape"]["segment"] / step
                lines.append(f"| {side} | {step:.3f} | {train[f'{side}_cpu_per_wall']:.2f} | {audio:.3f} |")
        if "ratio" in train:
            lines += ["", f"tunesmith / AudioCraft step time: **{train['ratio']:.3f}x** (goal <= 1.0)"]
        lines.append("")
    enc = results.get("encode")
    if enc:
        lines += [
            "### Encoding (encodec-32khz shape, random weights)",
            "",
            "| what | audio s per wall s | notes |",
            "| --- | --- | --- |",
            f"| tunesmith CodecModel.encode | {enc['tunesmith']['audio_seconds_per_s']:.1f} | "
            f"{enc['seconds_per_item']:.0f} s item |",
        ]
        if "audiocraft" in enc:
            lines.append(
                f"| AudioCraft EncodecModel.encode | {enc['audiocraft']['audio_seconds_per_s']:.1f} | "
                f"{enc['seconds_per_item']:.0f} s item |"
            )
        tc = enc["token_cache"]
        lines += [
            f"| tunesmith encode (token cache, end to end) | {tc['audio_seconds_per_s']} | "
            f"{tc['audio_seconds']} s of audio, {tc['audio_seconds_per_cpu_s']} audio s per CPU s "
            f"(process incl. start-up) |",
            f"| token cache reader, random 250-frame crops | {tc['reader_crops_per_s']} crops/s | memory map |",
            "",
        ]
    quality = results.get("quality")
    if quality:
        lines += [
            f"### Quality after the demo budget (tiny preset: {quality['train_steps']} updates, "
            f"{quality['train_wall_s']:.0f} s wall)",
            "",
            "| clips | codec | kbps | SI-SNR dB (higher better) | mel distance (lower better) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in quality["rows"]:
            lines.append(f"| {row['set']} | {row['codec']} | {row['kbps']:g} | {row['sisnr']:.2f} | {row['mel']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes and budgets")
    parser.add_argument("--sections", default="train,encode,quality", help="comma list of train, encode, quality")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-peer", action="store_true", help="measure tunesmith only")
    parser.add_argument("--no-music", action="store_true", help="skip the real-music clips (no apt download)")
    parser.add_argument("--out", type=Path, default=WORK / "results.json")
    # internal: timed children in fresh processes
    parser.add_argument("--child", choices=("train-step", "encode"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--segment", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report = child_train_step(args) if args.child == "train-step" else child_encode(args)
        print(json.dumps(report))
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not peer_available() and not args.skip_peer:
        print(
            f"note: no AudioCraft peer venv ({PEER_PY}); run `bash benchmarks/peers/setup_audiocraft.sh` "
            "to compare against it. Measuring tunesmith only.",
            file=sys.stderr,
        )
    results: dict[str, Any] = {
        "quick": args.quick,
        "threads": args.threads,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
    }
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    if "train" in sections:
        results["train"] = section_train(args, shape)
    if "encode" in sections:
        results["encode"] = section_encode(args, args.quick)
    if "quality" in sections:
        results["quality"] = section_quality(args, args.quick)
    results["machine"]["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
