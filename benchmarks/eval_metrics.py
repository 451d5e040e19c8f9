"""Benchmark the generation metrics: embedding throughput and the LM evaluate stage's share of an epoch.

Sections (all by default; pick with --sections):

    embed   clips per second per core (torch on one thread) of every FAD embedder on 10 s mono clips:
            the tiny codec preset's latents (configs/codec/tiny.yaml, 16 kHz) and transformers encoders
            at their published architectures with random weights (the cost does not depend on the
            weights): CLAP (ClapConfig defaults: HTSAT-tiny audio tower, 48 kHz), AST (ASTConfig
            defaults: ViT-base, 16 kHz, 10.24 s windows), wav2vec2-base and Whisper (WhisperConfig
            defaults, ~whisper-tiny encoder, 30 s chunks).
    fad     FAD itself (statistics + Fréchet distance, then with the FAD∞ fit over 9 subsets) on 2000
            random embeddings of 64, 512 and 768 dimensions against 8000 reference ones.
    stage   the LM tiny preset (configs/lm/tiny.yaml) on the tiny codec preset (untrained weights) and a
            synthetic dataset: one epoch of training against one evaluate stage with its defaults
            (evaluate.num_samples=8 samples of generate.duration=4 s; metrics fad (codec latents) + chroma),
            reported as seconds and as the stage's share of an epoch of the preset's 50 updates.

    python benchmarks/eval_metrics.py              # full
    python benchmarks/eval_metrics.py --quick      # fewer clips/updates: checks that everything runs

Prints markdown tables and writes JSON (default benchmarks/.work/eval_metrics/results.json). Timings are
only meaningful on an idle machine: check `uptime` first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

WORK = Path(__file__).resolve().parent / ".work" / "eval_metrics"


def _clips(count: int, seconds: float, rate: int) -> list[Any]:
    from tunesmith.data.synthetic import render_track, track_params
    from tunesmith.eval.embed import AudioClip

    return [AudioClip(f"c{i}", render_track(track_params(i, 0, seconds), rate), rate) for i in range(count)]


def _tiny_codec(folder: Path) -> Path:
    import torch

    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.config import resolve, to_dict
    from tunesmith.models.codec import build_codec_model
    from tunesmith.tasks import solver_class

    cfg = resolve("codec", solver_class("codec").config_class, "tiny", []).config.model
    torch.manual_seed(0)
    model = build_codec_model(cfg)
    ckpt.save_checkpoint(
        folder,
        weights={"model": {k: v.detach().clone() for k, v in model.state_dict().items()}},
        state={"step": 0, "epoch": 0},
        config={"meta": {"task": "codec"}, "config": {"model": to_dict(cfg)}},
    )
    return folder


def _hf_dirs(root: Path) -> dict[str, Path]:
    """Random-weight encoders at their published default architectures, saved like downloaded ones."""
    import torch
    from transformers import (
        ASTConfig,
        ASTFeatureExtractor,
        ASTModel,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    torch.manual_seed(0)
    made = {}
    for name, model, extractor in (
        ("clap-htsat-tiny", lambda: ClapModel(ClapConfig()), lambda: ClapFeatureExtractor(truncation="rand_trunc")),
        ("ast-base", lambda: ASTModel(ASTConfig()), ASTFeatureExtractor),
        ("wav2vec2-base", lambda: Wav2Vec2Model(Wav2Vec2Config()), Wav2Vec2FeatureExtractor),
        ("whisper-tiny-like", lambda: WhisperModel(WhisperConfig()), WhisperFeatureExtractor),
    ):
        folder = root / name
        if not (folder / "config.json").is_file():
            model().eval().save_pretrained(folder)
            extractor().save_pretrained(folder)
        made[name] = folder
    return made


def bench_embed(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from tunesmith.eval.embed import CodecLatentEmbedder, HFAudioEmbedder

    torch.set_num_threads(1)  # per core
    root = WORK / "models"
    root.mkdir(parents=True, exist_ok=True)
    clips = _clips(args.clips, args.seconds, 32000)
    embedders: list[tuple[str, Any]] = [
        ("codec-latent (tiny preset)", CodecLatentEmbedder.from_path(_tiny_codec(root / "codec")))
    ]
    for name, folder in _hf_dirs(root).items():
        embedders.append((name, HFAudioEmbedder(folder, batch_size=args.batch)))
    rows = []
    for name, embedder in embedders:
        embedder.embed(clips[:1])  # warm-up
        start = time.perf_counter()
        out = embedder.embed(clips)
        seconds = time.perf_counter() - start
        frames = sum(e.shape[0] for e in out)
        rows.append(
            {
                "embedder": name,
                "sample_rate": embedder.sample_rate,
                "dim": int(out[0].shape[1]),
                "frames_per_clip": frames / len(clips),
                "clips_per_s_per_core": len(clips) / seconds,
                "audio_s_per_s_per_core": len(clips) * args.seconds / seconds,
            }
        )
        print(f"  {name}: {rows[-1]['clips_per_s_per_core']:.2f} clips/s per core", file=sys.stderr)
    return rows


def bench_fad(args: argparse.Namespace) -> list[dict[str, Any]]:
    """FAD itself (statistics + Fréchet distance, and with the FAD∞ fit) on random embeddings."""
    from tunesmith.eval.frechet import fad, gaussian_stats

    rng = np.random.default_rng(0)
    rows = []
    for dim, n in ((64, 2000), (512, 2000), (768, 2000)):
        ref = gaussian_stats(rng.standard_normal((4 * n, dim)), warn=False)
        x = rng.standard_normal((n, dim))
        start = time.perf_counter()
        fad(x, ref, extrapolate=False)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        fad(x, ref, extrapolate=True)
        rows.append({"dim": dim, "frames": n, "fad_s": plain, "fad_with_inf_fit_s": time.perf_counter() - start})
    return rows


def bench_stage(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tunesmith.config import resolve
    from tunesmith.data.prepare.dataset import prepare_dataset
    from tunesmith.tasks import build_solver, solver_class

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="eval_stage_", dir=WORK))
    codec = _tiny_codec(tmp / "codec")
    data = tmp / "data"
    prepare_dataset([], data, source="synthetic", num_tracks=args.tracks, track_duration=10.0, sample_rate=16000,
                    segment=5.0, valid_fraction=0.2, progress=False)  # fmt: skip
    preset = resolve("lm", solver_class("lm").config_class, "tiny", []).config
    overrides = [
        f"data={data}",
        f"codec={codec}",
        "train.epochs=1",
        f"train.updates_per_epoch={args.updates}",
        "train.log.progress=false",
        "train.log.tensorboard=false",
        "generate.num_samples=0",
        "evaluate.metrics=[fad,chroma]",
    ]
    solver = build_solver("lm", "tiny", overrides, runs_dir=tmp / "runs")
    timing: dict[str, float] = {}
    original = solver.evaluate

    def timed(model, epoch):
        start = time.perf_counter()
        out = original(model, epoch)
        timing["evaluate_s"] = time.perf_counter() - start
        return out

    solver.evaluate = timed  # type: ignore[method-assign]
    result = solver.fit()
    train = result["history"][-1]["train"]
    per_update = train["epoch_seconds"] / args.updates
    epoch_s = per_update * preset.train.updates_per_epoch
    evaluated = result["history"][-1].get("evaluate", {})
    return {
        "updates_timed": args.updates,
        "seconds_per_update": per_update,
        "preset_epoch_updates": preset.train.updates_per_epoch,
        "preset_epoch_s": epoch_s,
        "evaluate_s": timing.get("evaluate_s"),
        "evaluate_share_of_epoch": timing.get("evaluate_s", float("nan")) / epoch_s,
        "evaluate_samples": preset.evaluate.num_samples,
        "sample_seconds": preset.generate.duration,
        "metrics": evaluated,
        "threads": args.threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="embed,fad,stage")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for the stage section")
    parser.add_argument("--out", type=Path, default=WORK / "results.json")
    args = parser.parse_args()
    args.clips, args.seconds, args.batch = (4, 10.0, 4) if args.quick else (16, 10.0, 8)
    args.updates, args.tracks = (5, 10) if args.quick else (50, 20)
    os.environ.setdefault("TUNESMITH_NO_PROGRESS", "1")
    from tunesmith.runtime import apply_thread_policy

    policy = apply_thread_policy(args.threads)  # what the CLI does: OpenMP passive waits, before torch starts
    print(f"threads: {policy.describe()}", file=sys.stderr)
    WORK.mkdir(parents=True, exist_ok=True)
    sections = set(args.sections.split(","))
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": args.quick,
    }
    if "embed" in sections:
        results["embed"] = bench_embed(args)
        print("\n| embedder | rate (Hz) | dim | frames / 10 s clip | clips/s per core | audio s/s per core |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in results["embed"]:
            print(f"| {r['embedder']} | {r['sample_rate']} | {r['dim']} | {r['frames_per_clip']:.0f} | "
                  f"{r['clips_per_s_per_core']:.2f} | {r['audio_s_per_s_per_core']:.1f} |")  # fmt: skip
    if "fad" in sections:
        results["fad"] = bench_fad(args)
        print("\n| dim | frames | FAD (s) | FAD + FAD∞ fit (s) |\n| --- | --- | --- | --- |")
        for r in results["fad"]:
            print(f"| {r['dim']} | {r['frames']} | {r['fad_s']:.3f} | {r['fad_with_inf_fit_s']:.3f} |")
    if "stage" in sections:
        s = results["stage"] = bench_stage(args)
        print(f"\nLM tiny preset, {s['threads']} threads: {s['seconds_per_update']:.3f} s per update "
              f"→ epoch of {s['preset_epoch_updates']} updates {s['preset_epoch_s']:.1f} s; evaluate stage "
              f"({s['evaluate_samples']} × {s['sample_seconds']:g} s, fad + chroma) {s['evaluate_s']:.1f} s = "
              f"{100 * s['evaluate_share_of_epoch']:.0f} % of an epoch")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
