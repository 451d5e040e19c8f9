"""Benchmark the MIDI GPT's training speed against a nanoGPT-style plain PyTorch GPT, and the
seconds tokenizer's speed against MidiTok's REMI.

Training (fp32, this machine's threads, random tokens of the MIDI vocabulary):
    tunesmith  MidiGPT (shared Transformer) + tunesmith.tasks.midi.lm_loss, AdamW, grad clipping
    plain      the GPT below, written the nanoGPT way (fused c_attn, SDPA causal, GELU MLP, LayerNorm with
               bias, learned positions, tied head), the same optimizer step
at the same shapes and parameter count: "tiny" (256 wide, 4 layers, 4 heads) and "gpt2-small"
(768 wide, 12 layers, 12 heads; short context and few steps on CPU). The two alternate, step by step
medians are compared. Also the whole `tunesmith train midi` loop (data loading, bookkeeping) at the
tiny shape, from the engine's own targets_per_s.

Tokenization (synthetic piano performances in the fake-MAESTRO styles):
    tunesmith  SecondsTokenizer.encode(notes)               and read_midi(bytes) + encode
    remi       miditok.REMI.encode(symusic Score)            and Score.from_midi(bytes) + encode

    python benchmarks/midi.py            # full
    python benchmarks/midi.py --quick    # a smoke run: fewer steps, shorter contexts, fewer notes
Prints a markdown table and writes JSON (default benchmarks/.work/midi/results.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / ".work" / "midi" / "results.json"

# name: (dim, layers, heads, context, batch, warmup steps, timed steps)
SHAPES_FULL = {
    "tiny": (256, 4, 4, 256, 8, 2, 10),
    "gpt2-small": (768, 12, 12, 256, 4, 1, 4),
}
SHAPES_QUICK = {
    "tiny": (256, 4, 4, 128, 4, 1, 3),
    "gpt2-small": (768, 12, 12, 64, 2, 1, 1),
}


# --------------------------------------------------------------------------- the plain reference


class PlainBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.mlp_proj = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    """GPT-2 layout in plain PyTorch: tokens [B, T] → (logits [B, T, V], mean loss)."""

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList([PlainBlock(dim, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# --------------------------------------------------------------------------- training speed


def make_models(vocab: int, dim: int, layers: int, heads: int, context: int):
    from tunesmith.models.midi.gpt import MidiGPT, MidiGPTConfig

    torch.manual_seed(0)
    ours = MidiGPT(MidiGPTConfig(dim=dim, num_layers=layers, num_heads=heads, max_seq_len=context), vocab)
    torch.manual_seed(0)
    plain = PlainGPT(vocab, dim, layers, heads, context)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    if n_ours != n_plain:
        raise SystemExit(f"shapes differ: tunesmith {n_ours:,} parameters, plain {n_plain:,}")
    return ours, plain, n_ours


def optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)


def step_ours(model, opt, tokens: torch.Tensor, mask: torch.Tensor) -> float:
    from tunesmith.tasks.midi import lm_loss

    loss_sum, _, _ = lm_loss(model, tokens, mask)
    (loss_sum / mask.numel()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss_sum.detach()) / mask.numel()


def step_plain(model, opt, tokens: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> float:
    _, loss = model(*tokens)  # (inputs, targets) as nanoGPT's get_batch makes them
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def bench_training(shapes: dict, vocab: int) -> list[dict]:
    rows = []
    for name, (dim, layers, heads, context, batch, warmup, steps) in shapes.items():
        ours, plain, n_params = make_models(vocab, dim, layers, heads, context)
        opt_ours, opt_plain = optimizer(ours), optimizer(plain)
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, vocab, (batch, context + 1), generator=gen)
        mask = torch.ones(batch, context, dtype=torch.bool)
        pair = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
        times: dict[str, list[float]] = {"tunesmith": [], "plain": []}
        losses = {}
        for i in range(warmup + steps):  # alternate step by step so both see the same machine load
            for label, model, opt, fn, data in (
                ("tunesmith", ours, opt_ours, step_ours, tokens),
                ("plain", plain, opt_plain, step_plain, pair),
            ):
                start = time.perf_counter()
                losses[label] = fn(model, opt, data, mask)
                if i >= warmup:
                    times[label].append(time.perf_counter() - start)
        flops_per_token = ours.flops_per_token(context)
        row = {"shape": name, "dim": dim, "layers": layers, "heads": heads, "context": context, "batch": batch}
        row["params"] = n_params
        for label, values in times.items():
            median = statistics.median(values)
            row[f"{label}_step_s"] = median
            row[f"{label}_tokens_per_s"] = batch * context / median
            row[f"{label}_gflops_per_s"] = flops_per_token * batch * context / median / 1e9
            row[f"{label}_loss"] = losses[label]
        row["ratio"] = row["tunesmith_tokens_per_s"] / row["plain_tokens_per_s"]
        rows.append(row)
        print(
            f"  {name}: tunesmith {row['tunesmith_tokens_per_s']:.0f} tok/s, plain {row['plain_tokens_per_s']:.0f} "
            f"tok/s ({row['ratio']:.2f}x)",
            file=sys.stderr,
        )
    return rows


def bench_engine(quick: bool) -> dict:
    """Tokens/s of the whole `tunesmith train midi` loop at the tiny shape on synthetic data."""
    from tunesmith.data.midi_prepare import prepare_midi
    from tunesmith.models.midi.synthetic import make_fake_maestro
    from tunesmith.tasks import build_solver

    dim, layers, heads, context, batch, _, steps = (SHAPES_QUICK if quick else SHAPES_FULL)["tiny"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_fake_maestro(root / "src", pieces_per_composer=3, seconds=30.0 if quick else 120.0, corrupt=False)
        prepare_midi(root / "src", root / "data")
        overrides = [
            f"data={root / 'data'}",
            f"model.dim={dim}",
            f"model.num_layers={layers}",
            f"model.num_heads={heads}",
            f"model.max_seq_len={context}",
            f"dataset.context_size={context}",
            f"dataset.batch_size={batch}",
            "train.epochs=1",
            f"train.updates_per_epoch={2 * steps}",
            "train.evaluate_every=1000",
            "train.valid_max_batches=1",
            "generate.num_samples=0",
            "train.log.progress=false",
        ]
        solver = build_solver("midi", "tiny", overrides, runs_dir=root / "runs")
        result = solver.fit()
    train = result["history"][-1]["train"]
    return {
        "shape": "tiny",
        "context": context,
        "batch": batch,
        "updates": 2 * steps,
        "tokens_per_s": train["targets_per_s"],
        "gflops_per_s": train.get("gflops_per_s"),
        "data_wait_share": train["data_wait_share"],
    }


# --------------------------------------------------------------------------- tokenization speed


def bench_tokenization(quick: bool, repeats: int) -> dict:
    from symusic import Score

    from tunesmith.models.midi.notes import read_midi, to_midi_bytes
    from tunesmith.models.midi.synthetic import COMPOSERS, style_of, synth_piece
    from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer

    warnings.filterwarnings("ignore", module="miditok")
    from miditok import REMI, TokenizerConfig

    n_pieces, seconds = (6, 30.0) if quick else (24, 120.0)
    pieces = [synth_piece(style_of(COMPOSERS[i % 3]), seconds, seed=i) for i in range(n_pieces)]
    blobs = [to_midi_bytes(p) for p in pieces]
    scores = [Score.from_midi(b) for b in blobs]
    notes = [read_midi(b) for b in blobs]
    n_notes = sum(len(n) for n in notes)
    ours = build_tokenizer(MidiTokenizerConfig())
    remi = REMI(TokenizerConfig(num_velocities=32, pitch_range=(21, 109), beat_res={(0, 4): 8, (4, 12): 4}))

    def timed(fn) -> float:
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    cases = {
        "tunesmith_encode": lambda: [ours.encode(n) for n in notes],
        "remi_encode": lambda: [remi.encode(s) for s in scores],
        "tunesmith_from_bytes": lambda: [ours.encode(read_midi(b)) for b in blobs],
        "remi_from_bytes": lambda: [remi.encode(Score.from_midi(b)) for b in blobs],
    }
    out = {"pieces": n_pieces, "notes": n_notes}
    for name, fn in cases.items():
        out[f"{name}_notes_per_s"] = n_notes / timed(fn)
    out["tokens_per_note_tunesmith"] = sum(len(ours.encode(n)) for n in notes) / n_notes
    out["tokens_per_note_remi"] = sum(len(remi.encode(s)[0].ids) for s in scores) / n_notes
    out["ratio_encode"] = out["tunesmith_encode_notes_per_s"] / out["remi_encode_notes_per_s"]
    out["ratio_from_bytes"] = out["tunesmith_from_bytes_notes_per_s"] / out["remi_from_bytes_notes_per_s"]
    return out


# --------------------------------------------------------------------------- report


def markdown(results: dict) -> str:
    lines = [
        f"### MIDI GPT training (fp32, {results['machine']['threads']} threads, tokens/s; median step)",
        "",
        "| shape | params | context × batch | tunesmith tok/s | plain (nanoGPT-style) tok/s | ratio | "
        "tunesmith GFLOP/s | plain GFLOP/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["training"]:
        lines.append(
            f"| {r['shape']} | {r['params'] / 1e6:.1f} M | {r['context']} × {r['batch']} | "
            f"{r['tunesmith_tokens_per_s']:,.0f} | {r['plain_tokens_per_s']:,.0f} | {r['ratio']:.2f}× | "
            f"{r['tunesmith_gflops_per_s']:.1f} | {r['plain_gflops_per_s']:.1f} |"
        )
    e = results.get("engine")
    if e:
        lines += [
            "",
            f"Whole `tunesmith train midi` loop, tiny, {e['context']} × {e['batch']}, {e['updates']} updates: "
            f"{e['tokens_per_s']:,.0f} tokens/s (data wait {100 * e['data_wait_share']:.1f}% of the epoch).",
        ]
    t = results["tokenization"]
    lines += [
        "",
        f"### Tokenization ({t['pieces']} pieces, {t['notes']:,} notes; notes/s, best of repeats)",
        "",
        "| path | tunesmith seconds tokenizer | MidiTok REMI | ratio |",
        "|---|---|---|---|",
        f"| encode (notes / Score in memory) | {t['tunesmith_encode_notes_per_s']:,.0f} | "
        f"{t['remi_encode_notes_per_s']:,.0f} | {t['ratio_encode']:.1f}× |",
        f"| MIDI bytes → tokens | {t['tunesmith_from_bytes_notes_per_s']:,.0f} | "
        f"{t['remi_from_bytes_notes_per_s']:,.0f} | {t['ratio_from_bytes']:.1f}× |",
        f"| tokens per note | {t['tokens_per_note_tunesmith']:.2f} | {t['tokens_per_note_remi']:.2f} | |",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: short contexts, few steps, few notes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--skip-engine", action="store_true", help="leave out the whole-loop measurement")
    args = parser.parse_args()
    os.environ.setdefault("TUNESMITH_NO_PROGRESS", "1")
    from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer

    vocab = build_tokenizer(MidiTokenizerConfig()).vocab_size
    shapes = SHAPES_QUICK if args.quick else SHAPES_FULL
    results = {
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
        },
        "vocab": vocab,
    }
    print("training speed…", file=sys.stderr)
    results["training"] = bench_training(shapes, vocab)
    if not args.skip_engine:
        print("whole training loop…", file=sys.stderr)
        results["engine"] = bench_engine(args.quick)
    print("tokenization…", file=sys.stderr)
    results["tokenization"] = bench_tokenization(args.quick, repeats=2 if args.quick else 5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nJSON: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
