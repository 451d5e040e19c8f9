"""HiggsAudio v2 fine-tuning step: tunesmith against a plain transformers + peft loop.

Both sides train transformers' own ``HiggsAudioV2ForConditionalGeneration`` (random weights, saved once with
``save_pretrained`` and loaded by each side with ``from_pretrained``) on the same batch, built with
tunesmith's ``HiggsPromptBuilder`` (system prompt, user text, a voice reference on half the rows, the
assistant's audio; loss on the assistant audio only), same seed, same LoRA settings (r 16, alpha 32,
dropout 0 on q/k/v/o), fused AdamW (transformers' Trainer default with torch ≥ 2.8, and the engine's):

    transformers  ``model(**inputs, audio_labels=…).loss.backward()``, ``opt.step()``, ``opt.zero_grad()``;
                  peft ``get_peft_model`` for mode=lora. Logits at every position, transformers' loss.
    tunesmith     ``models.higgs.model.prepare_for_training`` (TASK's: frozen text head, peft LoRA),
                  ``models.higgs.loss.higgs_loss`` (audio head only at the scored positions, fp32 CE) through
                  the engine's ``engine.update.accumulate`` (loss sum / audio target tokens), the engine's
                  weight-decay groups, gradient-norm clipping (max 1.0) and fused AdamW.

Each side × mode runs in its own fresh process (``--child``, ``OMP_WAIT_POLICY=PASSIVE`` as tunesmith's CLI
sets it); the sides alternate, ``--rounds`` times, so background load hits both alike. Reported: the median
step time after the warm-up steps, audio target tokens per second (labelled audio frames × codebooks; the
same count on both sides), the median process CPU time per step (all threads; on a shared machine it
moves far less with other jobs' load than wall time does, so its ratio is the steadier one), the child's peak RSS
(``ru_maxrss`` from ``os.wait4``), the training peak (RSS high-water mark reset with
``/proc/self/clear_refs`` once the model, optimizer and batch exist, minus the RSS at that moment), and on
CUDA ``torch.cuda.max_memory_allocated`` (whole process, and the training growth). The step-0 losses of
both sides are compared (same model, same batch → transformers' loss, ≤ 1e-4 in fp32).

    .venv/bin/python benchmarks/higgs_train.py                       # tiny + 100m shapes, lora + full, CPU fp32
    .venv/bin/python benchmarks/higgs_train.py --shapes tiny --rounds 1 --steps 2   # a smoke run
    .venv/bin/python benchmarks/higgs_train.py --device cuda --shapes 3b --modes lora   # GPU: bf16, + MFU
    .venv/bin/python benchmarks/higgs_train.py --shapes 3b --dry-run   # builds the 3B (LoRA) on the meta device

Shapes: ``tiny`` = the tests' model (32 wide, 2 layers, 4 codebooks × 34); ``100m`` = 512 wide, 6 layers,
8 heads / 2 KV heads (head_dim 64), FFN 1536 (text and audio), the Llama-3 vocabulary (128,256) and
8 codebooks × 1026 (1024 codes + stream BOS/EOS) — 106 M parameters; ``3b`` = Llama-3.2-3B's dimensions
(3072 wide, 28 layers, 24 / 8 heads, head_dim 128, FFN 8192) with HiggsAudio's dual FFN and 8 × 1026.
On CUDA the models run in bf16 (LoRA: bf16 base, fp32 adapters, as ``finetune.lora.base_dtype=bf16``;
full: bf16 weights, the plain side likewise); MFU counts 3 × forward matmul FLOPs (the usual convention,
although LoRA skips the frozen weights' gradients) against the GPU's dense bf16 peak.
Writes JSON to ``benchmarks/.work/higgs_train/`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "higgs_train"
sys.path.insert(0, str(ROOT / "src"))

SIDES = ("transformers", "tunesmith")
LORA = {"r": 16, "alpha": 32.0, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
LR = 1e-4
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|audio_out_bos|>",
    "<|AUDIO_OUT|>",
    "<|audio_eos|>",
    "<|reserved_special_token_6|>",
    "<|scene_desc_start|>",
    "<|scene_desc_end|>",
]
TEXTS = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background, then read the verse out loud for pleasure.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish, and rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "Four hours of steady work faced us.",
]
# per row: (text index, target frames, reference frames or None); 25 frames = 1 s of audio
ROWS = [(1, 150, None), (0, 125, 100), (3, 140, None), (2, 110, 120)]
DENSE_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


# --------------------------------------------------------------------------- shapes, model, batch


def make_tokenizer():
    """A small byte-level BPE (trained here on the benchmark's texts) with the Llama-3 special tokens the
    HiggsAudio chat format uses; only the special ids have to match the model's config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([*TEXTS, "Generate audio following instruction."] * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", pad_token="<|end_of_text|>"
    )


def shape_kwargs(shape: str) -> dict[str, Any]:
    """HiggsAudioV2Config dimensions of a benchmark shape (``head_dim`` always explicit)."""
    if shape == "tiny":
        return dict(
            vocab_size=None, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, num_codebooks=4, codebook_size=34,
        )  # fmt: skip
    if shape == "100m":
        return dict(
            vocab_size=128256, hidden_size=512, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=8,
            num_key_value_heads=2, head_dim=64, num_codebooks=8, codebook_size=1026,
        )  # fmt: skip
    if shape == "3b":
        return dict(
            vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
            num_key_value_heads=8, head_dim=128, num_codebooks=8, codebook_size=1026,
        )  # fmt: skip
    raise SystemExit(f"unknown shape {shape!r}: tiny, 100m or 3b")


def make_config(shape: str, tokenizer):
    from transformers import HiggsAudioV2Config

    kwargs = shape_kwargs(shape)
    kwargs["vocab_size"] = kwargs["vocab_size"] or len(tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    v = kwargs["codebook_size"]
    return HiggsAudioV2Config(
        **kwargs,
        max_position_embeddings=2048,
        audio_stream_bos_id=v - 2,
        audio_stream_eos_id=v - 1,
        audio_token_id=ids("<|AUDIO_OUT|>"),
        audio_bos_token_id=ids("<|audio_out_bos|>"),
        audio_delay_token_id=ids("<|reserved_special_token_6|>"),
        pad_token_id=ids("<|end_of_text|>"),
        bos_token_id=ids("<|begin_of_text|>"),
        eos_token_id=ids("<|eot_id|>"),
    )


def prepare_model(shape: str) -> Path:
    """The shape's random model + text tokenizer, saved once under benchmarks/.work/higgs_train/<shape>."""
    import torch
    from transformers import HiggsAudioV2ForConditionalGeneration

    folder = WORK / shape
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    model = HiggsAudioV2ForConditionalGeneration(make_config(shape, tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_batch(tokenizer, config, rows: int) -> dict:
    """``rows`` prompts (cycling through ROWS) with random codes, collated by tunesmith's HiggsPromptBuilder."""
    import torch

    from tunesmith.models.higgs.prompt import HiggsPromptBuilder, HiggsTokens, SpeechExample

    tokens = HiggsTokens(
        num_codebooks=config.num_codebooks,
        stream_bos_id=config.audio_stream_bos_id,
        stream_eos_id=config.audio_stream_eos_id,
    )
    builder = HiggsPromptBuilder(tokenizer, tokens)
    g = torch.Generator().manual_seed(0)

    def codes(frames: int):
        return torch.randint(0, config.audio_stream_bos_id, (config.num_codebooks, frames), generator=g)

    examples = []
    for i in range(rows):
        text, frames, ref = ROWS[i % len(ROWS)]
        if ref is None:
            examples.append(SpeechExample(TEXTS[text], codes=codes(frames)))
        else:
            reference = TEXTS[(text + 4) % len(TEXTS)]
            examples.append(
                SpeechExample(TEXTS[text], codes=codes(frames), reference_text=reference, reference_codes=codes(ref))
            )
    return builder.collate([builder.encode(ex) for ex in examples])


def audio_targets(batch: dict) -> int:
    """Labelled audio tokens of the batch (frames × codebooks)."""
    return int((batch["audio_labels"] != -100).sum())


def forward_flops_per_step(config, batch: dict) -> float:
    """Forward matmul FLOPs of one step: per position the attention projections, one FFN (text or audio: the
    dual FFN routes each position through one), causal attention over the row's length; the audio head at
    the positions whose next frame is labelled."""
    h, layers = config.hidden_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    per_position = layers * 2 * (h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size)
    positions = int(batch["attention_mask"].sum())
    b, length = batch["input_ids"].shape
    attention = layers * 2 * 2 * q * b * length * (length + 1) / 2  # scores + weighted values, causal half
    scored = int((batch["audio_labels"] != -100).any(-1).sum())  # ≈ frames predicted
    return per_position * positions + attention + 2 * h * config.num_codebooks * config.codebook_size * scored


# --------------------------------------------------------------------------- one side (child process)


def _kib(field: str) -> int:
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def reset_peak_rss() -> int | None:
    """Reset the RSS high-water mark to the current RSS (Linux); the current RSS in bytes, or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _kib("VmRSS") * 1024
    except OSError:
        return None


def build_side(side: str, mode: str, folder: Path, device, dtype, batch: dict):
    """(model, trainable parameters, step() → loss of transformers' definition) for one side."""
    import torch
    from transformers import HiggsAudioV2ForConditionalGeneration

    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=dtype)
    model.to(device).train()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask")}
    fused = device.type in ("cpu", "cuda")
    if side == "transformers":
        if mode == "lora":
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules=LORA["targets"])
            model = get_peft_model(model, config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=LR, fused=fused)

        def step() -> float:
            loss = model(**inputs, audio_labels=batch["audio_labels"]).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        return model, trainable, step

    from tunesmith.engine.precision import SafeScaler
    from tunesmith.engine.update import BackwardTarget, LossOutput, accumulate
    from tunesmith.models.higgs.loss import higgs_loss
    from tunesmith.models.higgs.model import HiggsFinetuneConfig, HiggsLoraSettings, prepare_for_training

    base_dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    lora = HiggsLoraSettings(
        r=LORA["r"], alpha=LORA["alpha"], dropout=0.0, target_modules=list(LORA["targets"]), base_dtype=base_dtype
    )
    model = prepare_for_training(model, HiggsFinetuneConfig(mode=mode, lora=lora), text_loss=False).to(device)
    decay, no_decay = [], []  # the engine's AdamW groups (Solver.param_groups)
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and not name.endswith(".bias") else no_decay).append(p)
    groups = [
        g for g in ({"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]
    ]
    trainable = decay + no_decay
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8, fused=fused)
    targets = {"model": BackwardTarget(SafeScaler("fp32", device))}
    seen: dict[str, float] = {}

    def closure(b: dict) -> LossOutput:
        out = higgs_loss(model, b, text_loss=False)
        seen["loss"] = float(out.transformers_loss().detach())
        return LossOutput(out.audio_sum)

    def step() -> float:
        accumulate(
            [batch],
            closure,
            count_targets=audio_targets,
            targets=targets,
            sync_module=model,
            autocast=contextlib.nullcontext,
            world_size=1,
            device=device,
        )
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return seen["loss"]

    return model, trainable, step


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer, HiggsAudioV2Config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    folder = Path(args.model_dir)
    config = HiggsAudioV2Config.from_pretrained(folder)
    batch = make_batch(AutoTokenizer.from_pretrained(folder), config, args.batch)
    batch = {k: v.to(device) for k, v in batch.items()}
    model, trainable, step = build_side(args.side, args.mode, folder, device, dtype, batch)
    gc.collect()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        setup_cuda = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    start_rss = reset_peak_rss()  # from here: gradients, optimizer state, activations, logits
    losses, times, cpu_times = [], [], []
    for i in range(args.warmup + args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        losses.append(step())
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - start_cpu)
    result = {
        "side": args.side,
        "mode": args.mode,
        "step_seconds": times,
        "cpu_seconds": cpu_times,
        "losses": losses,
        "audio_tokens": audio_targets(batch),
        "positions": int(batch["attention_mask"].sum()),
        "shape": list(batch["input_ids"].shape),
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in trainable),
        "train_peak_bytes": (_kib("VmHWM") * 1024 - start_rss) if start_rss is not None else None,
        "forward_flops": forward_flops_per_step(config, batch),
    }
    if cuda:
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
        result["cuda_train_peak_bytes"] = torch.cuda.max_memory_allocated() - setup_cuda
        result["gpu"] = torch.cuda.get_device_name()
    return result


# --------------------------------------------------------------------------- orchestration (parent)


def run_one(args: argparse.Namespace, shape: str, folder: Path, side: str, mode: str) -> dict[str, Any]:
    """One side × mode in a fresh process; its own ``ru_maxrss`` via ``os.wait4``."""
    out = WORK / f"child-{os.getpid()}.json"
    cmd = [
        sys.executable, __file__, "--child", "--side", side, "--mode", mode, "--model-dir", str(folder),
        "--device", args.device, "--threads", str(args.threads), "--warmup", str(args.warmup),
        "--steps", str(args.steps), "--batch", str(args.batch or default_batch(shape)), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # as tunesmith's CLI: idle threads sleep, CPU time = work
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{shape} {side} {mode} failed (exit {proc.returncode}):\n{log[-4000:]}")
    result = json.loads(out.read_text())
    out.unlink()
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024
    return result


def default_batch(shape: str) -> int:
    return 8 if shape == "3b" else 4


def summarise(shape: str, mode: str, runs: dict[str, list[dict]]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for side, results in runs.items():
        times = [t for r in results for t in r["step_seconds"]]
        median = statistics.median(times)
        cpu = statistics.median([t for r in results for t in r["cpu_seconds"]])
        first = results[0]
        row = {
            "median_step_s": median,
            "median_cpu_s": cpu,
            "audio_tokens_per_cpu_s": first["audio_tokens"] / cpu,
            "audio_tokens_per_s": first["audio_tokens"] / median,
            "audio_tokens": first["audio_tokens"],
            "positions": first["positions"],
            "batch_shape": first["shape"],
            "params": first["params"],
            "trainable": first["trainable"],
            "peak_rss_mb": max(r["peak_rss_bytes"] for r in results) / 2**20,
            "train_peak_mb": max((r["train_peak_bytes"] or 0) for r in results) / 2**20,
            "first_loss": first["losses"][0],
            "step_seconds": times,
        }
        if "cuda_peak_bytes" in first:
            row["cuda_peak_mb"] = max(r["cuda_peak_bytes"] for r in results) / 2**20
            row["cuda_train_peak_mb"] = max(r["cuda_train_peak_bytes"] for r in results) / 2**20
            peak = next((v for k, v in DENSE_BF16_PEAK.items() if k in first["gpu"]), None)
            row["gpu"] = first["gpu"]
            row["mfu"] = 3 * first["forward_flops"] / median / peak if peak else None
        rows[side] = row
    ts, hf = rows["tunesmith"], rows["transformers"]
    ts["speedup"] = hf["median_step_s"] / ts["median_step_s"]
    ts["cpu_speedup"] = hf["median_cpu_s"] / ts["median_cpu_s"]
    ts["train_peak_ratio"] = ts["train_peak_mb"] / hf["train_peak_mb"] if hf["train_peak_mb"] else None
    ts["loss_difference"] = abs(ts["first_loss"] - hf["first_loss"])
    return {"shape": shape, "mode": mode, "sides": rows}


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    cuda = meta["device"] == "cuda"
    head = "| shape | mode | side | trained params | batch (rows × positions) | step (s) | audio tokens/s "
    head += "| × transformers | CPU s/step | × (CPU time) | peak RSS (MB) | train peak (MB) |" + (
        " GPU peak (MB) | GPU train peak (MB) | MFU |" if cuda else ""
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for entry in results["runs"]:
        for side in SIDES:
            r = entry["sides"][side]
            speed = f"**{r['speedup']:.2f}×**" if side == "tunesmith" else "–"
            cpu_speed = f"**{r['cpu_speedup']:.2f}×**" if side == "tunesmith" else "–"
            b, length = r["batch_shape"]
            line = (
                f"| {entry['shape']} | {entry['mode']} | {side} | {r['trainable']:,} | {b} × {length} "
                f"| {r['median_step_s']:.3f} | {r['audio_tokens_per_s']:,.0f} | {speed} | {r['median_cpu_s']:.3f} "
                f"| {cpu_speed} | {r['peak_rss_mb']:,.0f} "
                f"| {r['train_peak_mb']:,.0f} |"
            )
            if cuda:
                mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "–"
                line += f" {r['cuda_peak_mb']:,.0f} | {r['cuda_train_peak_mb']:,.0f} | {mfu} |"
            lines.append(line)
    return "\n".join(lines)


def dry_run(shape: str) -> dict[str, Any]:
    """Build the shape on the meta device (no memory), apply tunesmith's LoRA preparation, build the batch and
    count parameters and FLOPs: exercises the GPU path's construction on any machine."""
    import torch
    from transformers import HiggsAudioV2ForConditionalGeneration

    from tunesmith.models.higgs.model import HiggsFinetuneConfig, HiggsLoraSettings, prepare_for_training

    tokenizer = make_tokenizer()
    config = make_config(shape, tokenizer)
    with torch.device("meta"):
        model = HiggsAudioV2ForConditionalGeneration(config).to(torch.bfloat16)
        lora = HiggsLoraSettings(r=LORA["r"], alpha=LORA["alpha"], dropout=0.0, target_modules=list(LORA["targets"]))
        model = prepare_for_training(model, HiggsFinetuneConfig(mode="lora", lora=lora), text_loss=False)
    batch = make_batch(tokenizer, config, default_batch(shape))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = 3 * forward_flops_per_step(config, batch)
    return {
        "shape": shape,
        "params": params,
        "trainable": trainable,
        "batch_shape": list(batch["input_ids"].shape),
        "audio_tokens": audio_targets(batch),
        "train_flops_per_step": flops,
        "bf16_weights_gb": (params - trainable) * 2 / 1e9,
        "seconds_per_step_at_40pct_mfu_on_h200": flops / (0.4 * DENSE_BF16_PEAK["H200"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="tiny,100m", help="comma-separated: tiny, 100m, 3b")
    parser.add_argument("--modes", default="lora,full", help="comma-separated: lora, full")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="rows per batch (default 4; 8 for 3b)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--dry-run", action="store_true", help="build the shapes on the meta device, no training")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/.work/higgs_train/...)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(run_child(args)))
        return 0
    shapes = [s for s in args.shapes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    WORK.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        for shape in shapes:
            print(json.dumps(dry_run(shape), indent=2))
        return 0
    if "3b" in shapes and args.device != "cuda":
        raise SystemExit("the 3b shape trains on --device cuda only (use --dry-run to build it on the meta device)")
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "load_average_before": os.getloadavg(),
            "device": args.device,
            "threads": args.threads,
            "warmup": args.warmup,
            "steps": args.steps,
            "rounds": args.rounds,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        },
        "runs": [],
    }
    for shape in shapes:
        folder = prepare_model(shape)
        for mode in modes:
            runs: dict[str, list[dict]] = {side: [] for side in SIDES}
            for _ in range(args.rounds):
                for side in SIDES:
                    r = run_one(args, shape, folder, side, mode)
                    runs[side].append(r)
                    print(
                        f"  {shape} {mode} {side}: {statistics.median(r['step_seconds']):.3f} s/step", file=sys.stderr
                    )
            results["runs"].append(summarise(shape, mode, runs))
    results["meta"]["load_average_after"] = os.getloadavg()
    out = args.out or WORK / f"results-{args.device}-{'-'.join(shapes)}.json"
    out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    for entry in results["runs"]:
        diff = entry["sides"]["tunesmith"]["loss_difference"]
        print(f"{entry['shape']} {entry['mode']}: |step-0 loss difference| = {diff:.2e}")
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
