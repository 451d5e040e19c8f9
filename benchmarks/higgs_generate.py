"""Benchmark HiggsAudio v2 generation: tunesmith's decoding loop vs transformers' ``generate``, greedy, same prompt.

Two random ``HiggsAudioV2ForConditionalGeneration`` models built from configs (no download):

- ``tiny``: the tests' shape (hidden 32, 2 layers, 4 codebooks × 34);
- ``100m``: hidden 768, 8 decoder layers (dual FFN, 2048 wide), 12 query / 4 key-value heads of 64,
  8 codebooks × 1026 (the released audio vocabulary), a 1000-token text vocabulary: ≈ 100 M parameters.

Each model generates the same batch of prompts (text tokens ending in ``<|audio_out_bos|>``) for a fixed number
of frames (the stream-EOS rows of the audio head are zeroed so neither side stops early), both implementations
timed alternately in one process after a warm-up each (median of ``--repeats``). Both outputs are compared
(greedy: they must be identical). Throughput = generated frames × codebooks × batch / second.

    python benchmarks/higgs_generate.py                    # both shapes, batch 1, 1 thread
    python benchmarks/higgs_generate.py --quick            # fewer frames and repeats
    python benchmarks/higgs_generate.py --shapes 100m --batch 4 --threads 2

Prints a markdown table and writes JSON (default benchmarks/.work/higgs_generate/results.json). Absolute numbers
are only meaningful on an idle machine; the ratio is measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "higgs_generate"
sys.path.insert(0, str(ROOT / "src"))

TEXT_VOCAB_SPECIALS = 8  # the last ids of the text vocabulary: bos, eos, pad, audio tokens
SHAPES = {
    "tiny": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, num_codebooks=4, codebook_size=34, vocab_size=300),
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                 num_key_value_heads=4, head_dim=64, num_codebooks=8, codebook_size=1026, vocab_size=1000),
}  # fmt: skip


def build_model(shape: str, seed: int = 0):
    """A random model of ``shape`` (eval mode) with the stream-EOS rows of its audio head zeroed."""
    from transformers import HiggsAudioV2Config, HiggsAudioV2ForConditionalGeneration

    s = dict(SHAPES[shape])
    vocab, codes = s["vocab_size"], s["codebook_size"]
    ids = {name: vocab - 1 - i for i, name in enumerate(("bos", "eos", "pad", "audio", "audio_bos", "delay"))}
    config = HiggsAudioV2Config(
        **s,
        max_position_embeddings=4096,
        audio_stream_bos_id=codes - 2,
        audio_stream_eos_id=codes - 1,
        audio_token_id=ids["audio"],
        audio_bos_token_id=ids["audio_bos"],
        audio_delay_token_id=ids["delay"],
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
    )
    torch.manual_seed(seed)
    model = HiggsAudioV2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for k in range(config.num_codebooks):
            model.audio_lm_head.weight[k * codes + config.audio_stream_eos_id] = 0.0
    return model


def prompt_batch(model, batch: int, length: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """``batch`` prompts of ``length`` random text tokens, the last one ``<|audio_out_bos|>``."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, cfg.vocab_size - TEXT_VOCAB_SPECIALS, (batch, length), generator=g)
    input_ids[:, 0] = cfg.bos_token_id
    input_ids[:, -1] = cfg.audio_bos_token_id
    k = cfg.num_codebooks
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "audio_input_ids": torch.zeros(batch, 0, k, dtype=torch.long),
        "audio_input_ids_mask": torch.zeros(batch, 0, dtype=torch.bool),
    }


def ours(model, batch, frames: int) -> torch.Tensor:
    from tunesmith.models.higgs.generation import greedy_audio_frames

    return greedy_audio_frames(model, batch, frames)


def theirs(model, batch, frames: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=frames,
            do_sample=False,
        )  # fmt: skip


def measure(shape: str, frames: int, batch_size: int, prompt: int, repeats: int) -> dict:
    model = build_model(shape)
    params = sum(p.numel() for p in model.parameters())
    batch = prompt_batch(model, batch_size, prompt)
    k = model.config.num_codebooks
    a, b = ours(model, batch, frames), theirs(model, batch, frames)  # warm-up, and the parity check
    same = a.shape == b.shape and bool(torch.equal(a, b))
    times: dict[str, list[float]] = {"tunesmith": [], "transformers": []}
    for _ in range(repeats):  # alternate, so that a busy moment of a shared machine hits both
        for name, fn in (("tunesmith", ours), ("transformers", theirs)):
            start = time.perf_counter()
            out = fn(model, batch, frames)
            times[name].append(time.perf_counter() - start)
            assert out.shape[1] == frames, (name, out.shape)
    median = {name: statistics.median(t) for name, t in times.items()}
    tokens = frames * k * batch_size
    return {
        "shape": shape,
        "params": params,
        "attn_implementation": model.config._attn_implementation,
        "batch": batch_size,
        "prompt_tokens": prompt,
        "frames": frames,
        "codebooks": k,
        "identical_outputs": same,
        "seconds": median,
        "all_seconds": times,
        "tokens_per_s": {name: tokens / s for name, s in median.items()},
        "speedup": median["transformers"] / median["tunesmith"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["tiny", "100m"], choices=sorted(SHAPES))
    p.add_argument("--frames", type=int, default=None, help="frames per generation (default: tiny 200, 100m 100)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, default=64, help="prompt length in text tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared machine)")
    p.add_argument("--quick", action="store_true", help="a quarter of the frames, 2 repeats")
    p.add_argument("--out", type=Path, default=WORK / "results.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for shape in args.shapes:
        frames = args.frames or {"tiny": 200, "100m": 100}[shape]
        repeats = args.repeats
        if args.quick:
            frames, repeats = max(8, frames // 4), 2
        results.append(measure(shape, frames, args.batch, args.prompt, repeats))
    print("| shape | params | batch | frames × codebooks | tunesmith tokens/s | transformers tokens/s | speed-up "
          "| identical |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        t = r["tokens_per_s"]
        size = f"{r['params'] / 1e6:.1f} M" if r["params"] >= 1e6 else f"{r['params'] / 1e3:.0f} k"
        cells = [r["shape"], size, r["batch"], f"{r['frames']} × {r['codebooks']}", f"{t['tunesmith']:.0f}",
                 f"{t['transformers']:.0f}", f"{r['speedup']:.2f}×", r["identical_outputs"]]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    record = {
        "results": results,
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["identical_outputs"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
