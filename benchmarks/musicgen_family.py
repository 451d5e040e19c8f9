"""MusicGen-family generation speed: tunesmith vs transformers on stereo and melody MusicGens, side by side.

For each shape (tiny 256 wide × 4 layers × 4 heads, medium 512 × 8 × 8) a random transformers model is built
from configs and saved (T5 128 wide × 2 layers, EnCodec at 8 kHz with 2048-entry codebooks, 4 codebooks per
channel), then imported with ``tunesmith import hf``:

    stereo   MusicgenForConditionalGeneration, decoder audio_channels=2, 8 interleaved codebooks
    melody   MusicgenMelodyForConditionalGeneration, a 235-frame chroma prefix (a 10 s melody, tiled) + text

Timed, text → waveform, batch 1, classifier-free guidance 3, top-k 250 sampling, ``--frames`` frames:
transformers ``model.generate(**inputs)`` (T5, decoding loop, EnCodec decode) and tunesmith's
``generate_codes`` + codec decode on the imported model (T5 inside the conditioner). The two run alternately
(``--repeats`` each after ``--warmup``), so background load hits both alike; the median is reported.

    .venv/bin/python benchmarks/musicgen_family.py              # tiny and medium, 250 frames
    .venv/bin/python benchmarks/musicgen_family.py --quick      # tiny only, 60 frames, 2 repeats
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "musicgen_family"
CARD, PER_CHANNEL = 2048, 4
SHAPES = {"tiny": (256, 4, 4), "medium": (512, 8, 8)}
TEXT = "ambient piano melody with soft strings"


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator([TEXT, "fast techno with drums"] * 20, trainer)
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return T5Tokenizer(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def make_model(kind: str, folder: Path, dim: int, layers: int, heads: int) -> Path:
    """A random stereo MusicGen or MusicGen-melody saved with save_pretrained (+ tokenizer)."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
        T5Config,
    )

    torch.manual_seed(0)
    channels = 2 if kind == "stereo" else 1
    decoder_cls = MusicgenDecoderConfig if kind == "stereo" else MusicgenMelodyDecoderConfig
    decoder = decoder_cls(
        vocab_size=CARD, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads, ffn_dim=4 * dim,
        num_codebooks=PER_CHANNEL * channels, audio_channels=channels, max_position_embeddings=2048,
        pad_token_id=CARD, bos_token_id=CARD, decoder_start_token_id=CARD,
    )  # fmt: skip
    subs = {
        "text_encoder": T5Config(vocab_size=64, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4).to_dict(),
        "audio_encoder": EncodecConfig(
            sampling_rate=8000,
            codebook_size=CARD,
            target_bandwidths=[float(PER_CHANNEL * 11 * 200 / 1000)],
            upsampling_ratios=[8, 5],
            num_filters=16,
            hidden_size=64,
            codebook_dim=64,
        ).to_dict(),  # fmt: skip
        "decoder": decoder.to_dict(),
    }
    if kind == "stereo":
        model = MusicgenForConditionalGeneration(MusicgenConfig(**subs)).eval()
    else:
        model = MusicgenMelodyForConditionalGeneration(MusicgenMelodyConfig(**subs, chroma_length=235)).eval()
    for key in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, key, CARD)
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def melody_chroma(frames: int = 78) -> torch.Tensor:
    """One-hot chroma [frames, 12] of a 10 s melody (78 frames at 7.8 Hz)."""
    classes = torch.tensor([0, 4, 7, 11, 9, 5, 2, 0]).repeat_interleave(10)[:frames]
    return torch.nn.functional.one_hot(classes, 12).float()


def alternate(fns: dict[str, Any], warmup: int, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def bench(kind: str, shape: str, frames: int, warmup: int, repeats: int) -> dict[str, Any]:
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    from tunesmith.inference.lm import Generator
    from tunesmith.models.hf.importer import import_hf
    from tunesmith.models.lm.generation import generate_codes

    dim, layers, heads = SHAPES[shape]
    source = WORK / f"{kind}-{shape}"
    if not (source / "config.json").is_file():
        make_model(kind, source, dim, layers, heads)
    imported = WORK / f"{kind}-{shape}-imported"
    shutil.rmtree(imported, ignore_errors=True)  # a fresh import each run (the scratch folder is the script's)
    import_hf(source, imported)
    ours = Generator.from_path(imported)
    cls = MusicgenForConditionalGeneration if kind == "stereo" else MusicgenMelodyForConditionalGeneration
    hf = cls.from_pretrained(str(source)).eval()
    enc = AutoTokenizer.from_pretrained(str(source))([TEXT], return_tensors="pt")
    chroma = melody_chroma()
    condition = {"description": TEXT, **({"chroma": chroma} if kind == "melody" else {})}
    extra = {"input_features": chroma[None]} if kind == "melody" else {}
    steps = frames + PER_CHANNEL - 1

    @torch.inference_mode()
    def gen_ours() -> None:
        codes = generate_codes(ours.model, [condition], frames, cfg_coef=3.0, top_k=250,
                               generator=torch.Generator().manual_seed(0))  # fmt: skip
        ours.codec.decode(codes)

    @torch.inference_mode()
    def gen_hf() -> None:
        hf.generate(**enc, **extra, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=steps)

    times = alternate({"tunesmith": gen_ours, "transformers": gen_hf}, warmup, repeats)
    row: dict[str, Any] = {"model": kind, "shape": shape, "frames": frames}
    for name, ts in times.items():
        med = statistics.median(ts)
        row[name] = {"median_s": med, "frames_per_s": frames / med, "times_s": ts}
    row["speedup"] = row["transformers"]["median_s"] / row["tunesmith"]["median_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny only, 60 frames, 1 warm-up, 2 repeats")
    parser.add_argument("--shapes", default="tiny,medium")
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--out", type=Path, default=WORK / "results.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = ["tiny"] if args.quick else args.shapes.split(",")
    frames, repeats = (60, 2) if args.quick else (args.frames, args.repeats)
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in shapes:
        for kind in ("stereo", "melody"):
            print(f"{kind} {shape} ...", file=sys.stderr)
            rows.append(bench(kind, shape, frames, args.warmup, repeats))
    print("| model | shape | frames | tunesmith frames/s | transformers frames/s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['shape']} | {r['frames']} | {r['tunesmith']['frames_per_s']:.1f} | "
              f"{r['transformers']['frames_per_s']:.1f} | {r['speedup']:.2f}× |")  # fmt: skip
    meta = {"machine": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
