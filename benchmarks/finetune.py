"""Fine-tuning benchmark: tunesmith (full and LoRA) against a straightforward transformers training step.

The same random MusicGen (saved by transformers, imported by tunesmith) is fine-tuned on the same batch
of codes and texts, fp32, fused AdamW (transformers' Trainer default with torch >= 2.8, and the engine's), in
each configuration:

    hf-full       MusicgenForConditionalGeneration: T5 and EnCodec frozen, decoder (+ projection) trained,
                  batch built with tunesmith.models.hf.inputs (labels with -100 at pattern padding)
    hf-lora       the same with peft LoRA on q/k/v/out (self and cross attention), fc1, fc2
    ts-full       tunesmith's LM imported from it (init_from=hf:DIR path), everything trained but the null
    ts-lora       tunesmith LoRA (finetune.mode=lora: qkv, out, q, kv, fc1, fc2)
    ts-lora-ckpt  the same with finetune.gradient_checkpointing=true

Each configuration runs in its own process (``--child``) so that its peak RSS is its own; the processes
are run in turn, ``--rounds`` times, so that background load hits all alike. Step time is the median over
all measured steps; "train peak" is the RSS growth over training (peak reset once the model and optimizer
are built: gradients, optimizer state, activations), "peak RSS" the whole process's.
Prints a markdown table and writes JSON.

    .venv/bin/python benchmarks/finetune.py            # tiny (256/4/4) and medium (512/8/8), 4 × 500 frames × 4
    .venv/bin/python benchmarks/finetune.py --quick    # tiny only, short sequences: a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "finetune"
CARD, K = 2048, 4
SHAPES = {"tiny": {"dim": 256, "layers": 4, "heads": 4}, "medium": {"dim": 512, "layers": 8, "heads": 8}}
CONFIGS = ["hf-full", "hf-lora", "ts-full", "ts-lora", "ts-lora-ckpt"]
TEXTS = [
    "ambient piano melody with soft strings",
    "fast techno with heavy drums and bass",
    "cinematic orchestral theme",
    None,  # an unconditional row (classifier-free guidance dropout)
]
LORA_R, LORA_ALPHA = 16, 32.0


# --------------------------------------------------------------------------- the model on disk


def make_tokenizer():
    """A small unigram T5 tokenizer trained offline on the benchmark's texts."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=100, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator([t for t in TEXTS if t] * 20, trainer)
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return T5Tokenizer(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def make_musicgen(folder: Path, dim: int, layers: int, heads: int) -> Path:
    """A random MusicGen (T5 128 wide × 2, EnCodec 8 kHz with 4 × 2048 codes, decoder dim/layers/heads)."""
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    config = MusicgenConfig(
        text_encoder=T5Config(vocab_size=128, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4).to_dict(),
        audio_encoder=EncodecConfig(
            sampling_rate=8000,
            codebook_size=CARD,
            codebook_dim=16,
            hidden_size=16,
            num_filters=4,
            upsampling_ratios=[8, 5],
            target_bandwidths=[8.8],  # 11 bits × 200 Hz = 2.2 kbps per codebook → 4 codebooks
            num_residual_layers=1,
        ).to_dict(),
        decoder=MusicgenDecoderConfig(
            vocab_size=CARD,
            hidden_size=dim,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            ffn_dim=4 * dim,
            num_codebooks=K,
            max_position_embeddings=4096,
            dropout=0.0,
            pad_token_id=CARD,
            bos_token_id=CARD,
            decoder_start_token_id=CARD,
        ).to_dict(),
    )
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config)
    for key in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, key, CARD)
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def prepare_shape(name: str) -> dict[str, str]:
    """WORK/<shape>/hf (transformers) and WORK/<shape>/ts (imported), made once."""
    from tunesmith.models.hf.importer import import_hf

    shape = SHAPES[name]
    hf_dir, ts_dir = WORK / name / "hf", WORK / name / "ts"
    if not (hf_dir / "model.safetensors").is_file():
        make_musicgen(hf_dir, shape["dim"], shape["layers"], shape["heads"])
    if not (ts_dir / "manifest.json").is_file():
        import_hf(hf_dir, ts_dir)
    return {"hf": str(hf_dir), "ts": str(ts_dir)}


# --------------------------------------------------------------------------- one configuration (child)


def _kib(field: str) -> int:
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _reset_peak() -> int | None:
    """Reset the peak-RSS mark to the current RSS (Linux); the current RSS in bytes, or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _kib("VmRSS") * 1024
    except OSError:
        return None


def _batch(batch: int, frames: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, CARD, (batch, K, frames), generator=gen)
    texts = [TEXTS[i % len(TEXTS)] for i in range(batch)]
    return codes, texts


def hf_step_fn(dirs: dict, mode: str, batch: int, frames: int):
    import torch
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from tunesmith.models.hf.inputs import hf_training_batch

    model = MusicgenForConditionalGeneration.from_pretrained(dirs["hf"])  # the decoder picks SDPA by default
    assert model.decoder.config._attn_implementation == "sdpa", model.decoder.config._attn_implementation
    model.freeze_text_encoder()
    model.freeze_audio_encoder()
    tokenizer = AutoTokenizer.from_pretrained(dirs["hf"])
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        targets = r"decoder\.model\.decoder\.layers\.\d+\.((self_attn|encoder_attn)\.(q|k|v|out)_proj|fc1|fc2)"
        model = get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                                 target_modules=targets))  # fmt: skip
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, fused=True)  # as Trainer (torch >= 2.8) and the engine
    codes, texts = _batch(batch, frames)

    def step() -> None:
        inputs = hf_training_batch(codes, texts, tokenizer, CARD)  # built per step, as a collator would
        model(**inputs).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, trainable, step


def ts_step_fn(dirs: dict, mode: str, batch: int, frames: int, checkpointing: bool):
    import torch

    from tunesmith.models.hf.finetune import FinetuneConfig, open_init_source, prepare_model
    from tunesmith.models.lm.lora import LoraSettings
    from tunesmith.models.lm.model import LMModel

    source = open_init_source(dirs["ts"], WORK)
    finetune = FinetuneConfig(
        mode=mode,
        lora=LoraSettings(r=LORA_R, alpha=LORA_ALPHA, dropout=0.0),
        gradient_checkpointing=checkpointing,
    )
    model = prepare_model(LMModel(source.lm_config), finetune, source).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    codes, texts = _batch(batch, frames)
    conditions = [{"description": t} if t else {} for t in texts]

    def step() -> None:
        loss_sum, _, counts = model(codes, conditions, return_loss=True)
        (loss_sum / counts.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, trainable, step


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dirs = json.loads(args.dirs)
    family, mode = args.child.split("-", 1)
    if family == "hf":
        model, trainable, step = hf_step_fn(dirs, mode, args.batch, args.frames)
    else:
        checkpointing = mode.endswith("-ckpt")
        model, trainable, step = ts_step_fn(dirs, mode.removesuffix("-ckpt"), args.batch, args.frames, checkpointing)
    gc.collect()
    start_rss = _reset_peak()  # from here: gradients, optimizer state and activations
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    train_peak = (_kib("VmHWM") * 1024 - start_rss) if start_rss is not None else None
    return {
        "config": args.child,
        "step_seconds": times,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in trainable),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "train_peak_bytes": train_peak,
    }


# --------------------------------------------------------------------------- orchestration


def measure(shape: str, dirs: dict, args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    for _ in range(args.rounds):
        for config in args.configs:
            cmd = [
                sys.executable, __file__, "--child", config, "--dirs", json.dumps(dirs),
                "--batch", str(args.batch), "--frames", str(args.frames), "--threads", str(args.threads),
                "--warmup", str(args.warmup), "--steps", str(args.steps),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"{config} failed:\n{proc.stderr[-3000:]}")
            runs[config].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            step = statistics.median(runs[config][-1]["step_seconds"])
            print(f"  {shape} {config}: {step:.3f} s/step", file=sys.stderr)
    rows = {}
    for config, results in runs.items():
        times = [t for r in results for t in r["step_seconds"]]
        median = statistics.median(times)
        rows[config] = {
            "median_step_s": median,
            "codebook_tokens_per_s": args.batch * args.frames * K / median,
            "params": results[0]["params"],
            "trainable": results[0]["trainable"],
            "peak_rss_mb": max(r["peak_rss_bytes"] for r in results) / 2**20,
            "train_peak_mb": (
                max(r["train_peak_bytes"] for r in results) / 2**20
                if all(r["train_peak_bytes"] is not None for r in results)
                else None
            ),
            "step_seconds": times,
        }
    for config, row in rows.items():
        peer = "hf-full" if config.endswith("full") else "hf-lora"
        if config.startswith("ts") and peer in rows:
            row["speedup_vs_transformers"] = rows[peer]["median_step_s"] / row["median_step_s"]
    return rows


def markdown(results: dict) -> str:
    lines = []
    meta = results["meta"]
    lines.append(
        f"Fine-tuning step, batch {meta['batch']} × {meta['frames']} frames × {K} codebooks, fp32, "
        f"{meta['threads']} threads, median of {meta['steps']} steps × {meta['rounds']} rounds"
    )
    lines.append("")
    lines.append(
        "| shape | config | trained params | step (s) | codebook tokens/s | vs transformers | peak RSS (MB) "
        "| train peak (MB) |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for shape, rows in results["shapes"].items():
        for config, row in rows.items():
            speedup = row.get("speedup_vs_transformers")
            train_peak = row["train_peak_mb"]
            lines.append(
                f"| {shape} | {config} | {row['trainable']:,} | {row['median_step_s']:.3f} "
                f"| {row['codebook_tokens_per_s']:,.0f} | {f'{speedup:.2f}×' if speedup else '–'} "
                f"| {row['peak_rss_mb']:,.0f} | {f'{train_peak:,.0f}' if train_peak is not None else '–'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape, 2 × 100 frames, few steps")
    parser.add_argument("--shapes", default="tiny,medium", help=f"comma-separated of {sorted(SHAPES)}")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated of {CONFIGS}")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration process")
    parser.add_argument("--json", type=Path, default=WORK / "results.json", help="where to write the JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dirs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return 0
    if args.quick:
        args.shapes, args.batch, args.frames, args.warmup, args.steps, args.rounds = "tiny", 2, 100, 1, 2, 1
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {CONFIGS}")
    results: dict[str, Any] = {
        "meta": {
            "batch": args.batch,
            "frames": args.frames,
            "warmup": args.warmup,
            "steps": args.steps,
            "rounds": args.rounds,
            "threads": args.threads,
            "quick": args.quick,
            "lora": {"r": LORA_R, "alpha": LORA_ALPHA},
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        },
        "shapes": {},
    }
    for shape in args.shapes.split(","):
        print(f"{shape}: preparing the model directories", file=sys.stderr)
        dirs = prepare_shape(shape)
        results["shapes"][shape] = measure(shape, dirs, args)
    print(markdown(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
