"""LM benchmarks: training tokens/s, GFLOP/s, generation frames/s with CFG, token cache vs on-the-fly encoding.

Peers at identical shapes: transformers' ``MusicgenForCausalLM`` (SDPA) in this process, AudioCraft's LM
through ``benchmarks/peers/audiocraft_peer.py`` in its own venv (skipped with a message when that venv is
missing: ``bash benchmarks/peers/setup_audiocraft.sh``). In-process peers are measured alternately, step
by step, so that background load hits both alike. Prints markdown tables and writes JSON.

    .venv/bin/python benchmarks/lm.py            # full: tiny (256/4/4) and medium (512/8/8), 4 × 500 × 4
    .venv/bin/python benchmarks/lm.py --quick    # a minute-scale smoke run of every section

Conditioning is the same text for every peer: 16 words → 16 condition tokens through a lookup table
(ours: ``text_layers=0``; AudioCraft: its LUT conditioner; transformers: encoder states of 16 tokens).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "lm"
PEER_PYTHON = ROOT / "benchmarks" / ".work" / "audiocraft-venv" / "bin" / "python"
PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "audiocraft_peer.py"
WORDS = [
    "ambient", "piano", "melody", "drums", "bass", "guitar", "synth", "strings",
    "violin", "cello", "jazz", "rock", "techno", "house", "orchestral", "cinematic",
]  # fmt: skip
CARD, K = 2048, 4


# --------------------------------------------------------------------------- models


def our_model(dim: int, layers: int, heads: int, text_words: int):
    from tunesmith.models.lm import ConditionerConfig, LMConfig, LMModel, build_vocabularies
    from tunesmith.models.transformer import TransformerConfig

    cond = ConditionerConfig(text_layers=0, text_dim=dim, text_max_len=text_words, cfg_dropout=0.0)
    cfg = LMConfig(
        card=CARD,
        num_codebooks=K,
        transformer=TransformerConfig(dim=dim, num_layers=layers, num_heads=heads, ffn_dim=4 * dim, max_seq_len=4096),
        conditioner=cond,
    )
    conditions = [{"description": " ".join(WORDS[:text_words])}]
    return LMModel(cfg, build_vocabularies(conditions, cond)), conditions[0]


def hf_model(dim: int, layers: int, heads: int):
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    cfg = MusicgenDecoderConfig(
        vocab_size=CARD,
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        ffn_dim=4 * dim,
        num_codebooks=K,
        dropout=0.0,
        max_position_embeddings=4096,
    )
    cfg.decoder_start_token_id = CARD  # training with labels needs it (see ENV-NOTES)
    return MusicgenForCausalLM._from_config(cfg, attn_implementation="sdpa")


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- measurement


def alternate(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Run each callable in turn, ``warmup`` unmeasured rounds then ``repeats`` measured; seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times[name].append(elapsed)
    return times


def peer(command: str, args: list[str], timeout: float = 3600) -> dict[str, Any]:
    """AudioCraft's numbers from its peer CLI, or {"skipped": reason}."""
    if not PEER_SCRIPT.is_file():
        return {"skipped": f"{PEER_SCRIPT.relative_to(ROOT)} not found"}
    if not PEER_PYTHON.is_file():
        return {"skipped": "AudioCraft venv missing: run `bash benchmarks/peers/setup_audiocraft.sh`"}
    proc = subprocess.run(
        [str(PEER_PYTHON), str(PEER_SCRIPT), command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        return {"skipped": f"peer failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


# --------------------------------------------------------------------------- sections


def bench_train(shape: dict, batch: int, frames: int, warmup: int, repeats: int, audiocraft: bool, bf16: bool) -> dict:
    from tunesmith.models.lm.patterns import Pattern

    dim, layers, heads = shape["dim"], shape["layers"], shape["heads"]
    torch.manual_seed(0)
    ours, condition = our_model(dim, layers, heads, 16)
    hf = hf_model(dim, layers, heads)
    ours.train()
    hf.train()
    frames_t = torch.randint(0, CARD, (batch, K, frames))
    conditions = [condition] * batch
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    # transformers: delayed codes after a start column as input, delayed codes (padding = -100) as labels
    pattern = Pattern("delay", K)
    seq = pattern.build(frames_t, CARD)
    hf_inputs = Pattern.model_input(seq, CARD).reshape(batch * K, -1)
    hf_labels = seq.masked_fill(~pattern.valid_mask(frames), -100).transpose(1, 2).contiguous()
    encoder_states = torch.randn(batch, 16, dim)

    def precision(dtype: torch.dtype | None):
        return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def step_ours(dtype: torch.dtype | None = None) -> None:
        with precision(dtype):
            loss_sum, _, counts = ours(frames_t, conditions, return_loss=True)
        (loss_sum / counts.sum()).backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_hf(dtype: torch.dtype | None = None) -> None:
        with precision(dtype):
            out = hf(input_ids=hf_inputs, encoder_hidden_states=encoder_states, labels=hf_labels)
        out.loss.backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    contenders = {"tunesmith": step_ours, "transformers": step_hf}
    if bf16:  # both under CPU bf16 autocast (fp32 weights and optimizer), reported apart from the fp32 race
        contenders["tunesmith_bf16"] = lambda: step_ours(torch.bfloat16)
        contenders["transformers_bf16"] = lambda: step_hf(torch.bfloat16)
    times = alternate(contenders, warmup, repeats)
    tokens = batch * frames * K
    row: dict[str, Any] = {"shape": shape["name"], "params_tunesmith": params(ours), "params_transformers": params(hf)}
    for name, ts in times.items():
        med = statistics.median(ts)
        row[name] = {"median_step_s": med, "codebook_tokens_per_s": tokens / med, "step_times_s": ts}
    steps = pattern.num_steps(frames)
    flops = ours.flops_per_token(steps, cond_len=17) * steps * batch
    for name in [n for n in row if n.startswith("tunesmith")]:
        row[name]["gflops_per_s"] = flops / row[name]["median_step_s"] / 1e9
    if audiocraft:
        args = ["--dim", str(dim), "--layers", str(layers), "--heads", str(heads), "--n-q", str(K)]
        args += ["--card", str(CARD), "--batch", str(batch), "--frames", str(frames), "--text-words", "16"]
        args += ["--steps", str(repeats), "--warmup", str(warmup), "--threads", str(torch.get_num_threads())]
        ac = peer("lm-train", args)
        row["audiocraft"] = (
            ac
            if "skipped" in ac
            else {
                "median_step_s": ac["median_step_s"],
                "codebook_tokens_per_s": ac["codebook_tokens_per_s"],
                "step_times_s": ac["step_times_s"],
            }
        )
    return row


def bench_generate(shape: dict, frames: int, warmup: int, repeats: int, audiocraft: bool, cfg: float = 3.0) -> dict:
    from tunesmith.models.lm.generation import generate_codes

    dim, layers, heads = shape["dim"], shape["layers"], shape["heads"]
    torch.manual_seed(0)
    ours, condition = our_model(dim, layers, heads, 16)
    hf = hf_model(dim, layers, heads)
    ours.eval()
    hf.eval()
    start_ids = torch.full((K, 1), CARD)
    states = torch.randn(1, 16, dim)
    hf_states = torch.cat([states, torch.zeros_like(states)])  # conditional + null rows, as HF's CFG expects

    def gen_ours() -> None:
        generate_codes(ours, [condition], frames, cfg_coef=cfg, top_k=250, generator=torch.Generator().manual_seed(0))

    @torch.inference_mode()
    def gen_hf() -> None:
        hf.generate(
            input_ids=start_ids,
            encoder_hidden_states=hf_states,
            guidance_scale=cfg,
            do_sample=True,
            top_k=250,
            max_new_tokens=frames + K - 1,
            num_return_sequences=1,
        )

    times = alternate({"tunesmith": gen_ours, "transformers": gen_hf}, warmup, repeats)
    row: dict[str, Any] = {"shape": shape["name"], "frames": frames, "cfg": cfg}
    for name, ts in times.items():
        med = statistics.median(ts)
        row[name] = {"median_s": med, "frames_per_s": frames / med, "times_s": ts}
    if audiocraft:
        args = ["--dim", str(dim), "--layers", str(layers), "--heads", str(heads), "--n-q", str(K)]
        args += ["--card", str(CARD), "--batch", "1", "--frames", str(frames), "--cfg", str(cfg), "--top-k", "250"]
        args += ["--text-words", "16", "--steps", str(repeats), "--warmup", str(warmup)]
        args += ["--threads", str(torch.get_num_threads())]
        ac = peer("lm-generate", args)
        row["audiocraft"] = (
            ac if "skipped" in ac else {"median_s": ac["median_step_s"], "frames_per_s": ac["frames_per_s"]}
        )
    return row


def bench_cache(seconds: float, batch: int, warmup: int, repeats: int) -> dict:
    """LM training steps/s reading cached tokens vs loading audio and encoding it every step (the peers' way)."""
    import numpy as np

    from tunesmith.audio.io import load_audio
    from tunesmith.data.manifest import read_manifest, resolve_path
    from tunesmith.data.prepare import prepare_dataset
    from tunesmith.data.token_cache import TokenShards, ensure_token_cache
    from tunesmith.models.codec import CodecModelConfig, build_codec_model

    torch.manual_seed(0)
    data = WORK / f"data-{seconds:g}s"
    prepare_dataset(
        [], data, source="synthetic", num_tracks=batch + 2, track_duration=seconds, segment=seconds, progress=False
    )
    codec = build_codec_model(CodecModelConfig(ratios=[8, 5, 4, 4], n_q=K, bins=CARD)).eval()  # MusicGen's shape
    cache_dir = ensure_token_cache(data, codec, progress=False)
    shards = TokenShards(cache_dir, "train")
    entries = read_manifest(data, "train")
    lm, condition = our_model(256, 4, 4, 16)
    lm.train()
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    frames = int(round(seconds * codec.frame_rate))
    conditions = [condition] * batch
    gen = torch.Generator().manual_seed(0)

    def lm_step(codes: torch.Tensor) -> None:
        loss_sum, _, counts = lm(codes, conditions, return_loss=True)
        (loss_sum / counts.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def from_cache() -> None:
        crops = [shards.crop(i % len(shards), frames, gen)[0] for i in range(batch)]
        lm_step(torch.from_numpy(np.stack(crops).astype(np.int64)))

    def on_the_fly() -> None:
        wavs = [
            load_audio(resolve_path(data, entries[i % len(entries)]), codec.sample_rate, 1)[0] for i in range(batch)
        ]
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(np.stack(wavs)))
        lm_step(codes[:, :, :frames])

    times = alternate({"token_cache": from_cache, "encode_on_the_fly": on_the_fly}, warmup, repeats)
    row: dict[str, Any] = {"segment_s": seconds, "batch": batch, "frames": frames}
    for name, ts in times.items():
        row[name] = {"median_step_s": statistics.median(ts), "steps_per_s": 1 / statistics.median(ts), "times_s": ts}
    return row


# --------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def speed(row: dict, name: str, key: str) -> float | None:
    entry = row.get(name) or {}
    return entry.get(key) if "skipped" not in entry else None


def markdown(results: dict) -> str:
    lines = []
    if results.get("train"):
        lines += [
            "### Training throughput (codebook tokens/s, forward + backward + AdamW)",
            "",
            f"batch {results['settings']['batch']} × {results['settings']['frames']} frames × {K} codebooks, "
            f"card {CARD}, 16 condition tokens, {results['settings']['threads']} threads",
            "",
            "| shape | tunesmith | transformers | AudioCraft | × transformers | × AudioCraft | tunesmith GFLOP/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in results["train"]:
            ours, hf = (
                speed(row, "tunesmith", "codebook_tokens_per_s"),
                speed(row, "transformers", "codebook_tokens_per_s"),
            )
            ac = speed(row, "audiocraft", "codebook_tokens_per_s")
            lines.append(
                f"| {row['shape']} | {fmt(ours)} | {fmt(hf)} | {fmt(ac)} | {fmt(ours / hf if hf else None, 2)} | "
                f"{fmt(ours / ac if ac else None, 2)} | {fmt(row['tunesmith']['gflops_per_s'], 1)} |"
            )
        lines += ["", f"plain fp32 matmul (2048²): {fmt(results['matmul_gflops'], 1)} GFLOP/s", ""]
        if any("tunesmith_bf16" in row for row in results["train"]):
            lines += [
                "bf16 autocast on CPU (fp32 weights and AdamW; not part of the fp32 comparison above):",
                "",
                "| shape | tunesmith bf16 | transformers bf16 | × transformers bf16 | × tunesmith fp32 | GFLOP/s |",
                "|---|---|---|---|---|---|",
            ]
            for row in results["train"]:
                ours = speed(row, "tunesmith_bf16", "codebook_tokens_per_s")
                hf = speed(row, "transformers_bf16", "codebook_tokens_per_s")
                fp32 = speed(row, "tunesmith", "codebook_tokens_per_s")
                gflops = row["tunesmith_bf16"]["gflops_per_s"]
                lines.append(
                    f"| {row['shape']} | {fmt(ours)} | {fmt(hf)} | {fmt(ours / hf if hf and ours else None, 2)} | "
                    f"{fmt(ours / fp32 if fp32 and ours else None, 2)} | {fmt(gflops, 1)} |"
                )
            lines.append("")
    if results.get("generate"):
        lines += [
            "### Generation with CFG (frames/s, batch 1, top-k 250, KV cache)",
            "",
            "| shape | frames | tunesmith | transformers | AudioCraft | × transformers | × AudioCraft |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in results["generate"]:
            ours, hf = speed(row, "tunesmith", "frames_per_s"), speed(row, "transformers", "frames_per_s")
            ac = speed(row, "audiocraft", "frames_per_s")
            lines.append(
                f"| {row['shape']} | {row['frames']} | {fmt(ours, 1)} | {fmt(hf, 1)} | {fmt(ac, 1)} | "
                f"{fmt(ours / hf if hf else None, 2)} | {fmt(ours / ac if ac else None, 2)} |"
            )
        lines.append("")
    if results.get("cache"):
        row = results["cache"]
        cached, fly = row["token_cache"]["steps_per_s"], row["encode_on_the_fly"]["steps_per_s"]
        lines += [
            "### Training from the token cache vs encoding audio every step (tiny LM, MusicGen-shaped codec)",
            "",
            "| segment | batch | token cache steps/s | on-the-fly steps/s | speed-up |",
            "|---|---|---|---|---|",
            f"| {row['segment_s']:g} s | {row['batch']} | {cached:.3f} | {fly:.3f} | {cached / fly:.2f}× |",
            "",
        ]
    for name, reason in results.get("skipped", {}).items():
        lines.append(f"- {name}: skipped ({reason})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape, short sequences, few repeats")
    parser.add_argument("--sections", default="train,generate,cache", help="comma-separated: train,generate,cache")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-audiocraft", action="store_true", help="skip the AudioCraft peer")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-autocast training rows")
    parser.add_argument("--json", type=Path, default=WORK / "results.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    shapes = [{"name": "tiny 256/4/4", "dim": 256, "layers": 4, "heads": 4}]
    if not args.quick:
        shapes.append({"name": "medium 512/8/8", "dim": 512, "layers": 8, "heads": 8})
    batch, frames = 4, (100 if args.quick else 500)
    repeats, warmup = (2, 1) if args.quick else (5, 1)
    gen_frames = 50 if args.quick else 250
    WORK.mkdir(parents=True, exist_ok=True)
    audiocraft = not args.no_audiocraft
    results: dict[str, Any] = {
        "settings": {"quick": args.quick, "batch": batch, "frames": frames, "threads": args.threads},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
        "skipped": {},
    }
    if audiocraft:
        probe = peer("--help", []) if not PEER_PYTHON.is_file() or not PEER_SCRIPT.is_file() else {}
        if "skipped" in probe:
            results["skipped"]["audiocraft"] = probe["skipped"]
            print(f"AudioCraft peer skipped: {probe['skipped']}", file=sys.stderr)
            audiocraft = False
    if "train" in sections:
        results["matmul_gflops"] = matmul_gflops(args.threads)
        results["train"] = []
        for shape in shapes:
            print(f"train {shape['name']} ...", file=sys.stderr)
            results["train"].append(bench_train(shape, batch, frames, warmup, repeats, audiocraft, not args.no_bf16))
    if "generate" in sections:
        results["generate"] = []
        for shape in shapes:
            print(f"generate {shape['name']} ...", file=sys.stderr)
            results["generate"].append(bench_generate(shape, gen_frames, warmup, repeats, audiocraft))
    if "cache" in sections:
        print("token cache vs on-the-fly encoding ...", file=sys.stderr)
        results["cache"] = bench_cache(2.0 if args.quick else 10.0, batch, warmup, repeats)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nJSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
