"""Benchmark tunesmith's HiggsAudio v2 audio tokenizer at the released shape (random weights).

The released tokenizer's shape (transformers' conversion script): DAC encoder 64 → 2048 channels,
strides 8·5·4·2·3 (hop 960, 25 frames/s at 24 kHz), latent 256, decoder 1024 wide; HuBERT base (768 wide,
12 layers, 7 conv layers of 512); 8 codebooks × 1024 (target bandwidths up to 2 kbps).

    python benchmarks/higgs_tokenizer.py                    # tunesmith only: encode/decode × real time
    PYTHONPATH=/tmp/ta python benchmarks/higgs_tokenizer.py --reference
        # also transformers' HiggsAudioV2TokenizerModel (needs torchaudio's Python parts, see
        # tests/fixtures/higgs_tokenizer/make_reference.py): same weights, codes compared, speed side by side

``--quick`` shrinks the clip and repeats. Prints a markdown table and writes JSON (default
benchmarks/.work/higgs_tokenizer/results.json). Timings are only meaningful on an idle machine.
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
WORK = HERE / ".work" / "higgs_tokenizer"
sys.path.insert(0, str(ROOT / "src"))

RELEASED = {
    "model_type": "higgs_audio_v2_tokenizer",
    "acoustic_model_config": {
        "model_type": "dac",
        "encoder_hidden_size": 64,
        "downsampling_ratios": [8, 5, 4, 2, 3],
        "decoder_hidden_size": 1024,
        "upsampling_ratios": [8, 5, 4, 2, 3],
        "hidden_size": 256,
    },
    "semantic_model_config": {"model_type": "hubert", "mask_time_prob": 0.0},
    "target_bandwidths": [0.5, 1, 1.5, 2],
    "codebook_size": 1024,
    "codebook_dim": 64,
}


def timed(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_reference(directory: Path, wav: torch.Tensor):
    """transformers' tokenizer at the released shape, codebooks filled from its own residuals, saved."""
    from transformers import DacConfig, HiggsAudioV2TokenizerConfig, HiggsAudioV2TokenizerModel, HubertConfig

    torch.manual_seed(0)
    ac = {k: v for k, v in RELEASED["acoustic_model_config"].items() if k != "model_type"}
    config = HiggsAudioV2TokenizerConfig(
        acoustic_model_config=DacConfig(**ac),
        semantic_model_config=HubertConfig(mask_time_prob=0.0),
        target_bandwidths=RELEASED["target_bandwidths"],
        codebook_size=RELEASED["codebook_size"],
        codebook_dim=RELEASED["codebook_dim"],
    )
    model = HiggsAudioV2TokenizerModel(config).eval()
    with torch.no_grad():
        sem = model.encoder_semantic(model._extract_semantic_features(wav).transpose(1, 2))
        ac_in = wav
        if model._get_conv1d_output_lengths(wav.shape[2], model.acoustic_encoder) != sem.shape[2]:
            ac_in = torch.nn.functional.pad(wav, (model.pad, model.pad))
        emb = model.fc(torch.cat([model.acoustic_encoder(ac_in), sem], 1).transpose(1, 2)).transpose(1, 2)
        residual = emb
        g = torch.Generator().manual_seed(0)
        for vq in model.quantizer.quantizers:
            z = vq.project_in(residual.transpose(1, 2)).reshape(-1, RELEASED["codebook_dim"])
            pick = torch.randint(0, z.shape[0], (RELEASED["codebook_size"],), generator=g)
            book = z[pick] + 0.1 * z.std() * torch.randn(RELEASED["codebook_size"], z.shape[1], generator=g)
            vq.codebook.embed.copy_(book)
            residual = residual - vq.decode(vq.encode(residual))
    model.save_pretrained(directory)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", action="store_true", help="also run transformers' model (needs torchaudio)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=WORK / "results.json")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    repeats = args.repeats or (1 if args.quick else 3)

    from tunesmith.models.higgs.tokenizer import HiggsAudioTokenizer, load_higgs_tokenizer
    from tunesmith.models.higgs.tokenizer_config import HiggsTokenizerConfig

    g = torch.Generator().manual_seed(1)
    samples = int(seconds * 24000)
    t = torch.arange(samples) / 24000
    wav = (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(samples, generator=g))[None, None]

    rows: list[dict] = []
    result: dict = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds": seconds,
        "repeats": repeats,
        "load_average": os.getloadavg(),
    }
    if args.reference:
        model_dir = WORK / "released-shape"
        reference = build_reference(model_dir, wav)
        ours = load_higgs_tokenizer(model_dir)
        with torch.no_grad():
            ref_codes = reference.encode(wav, return_dict=False)
            ref_audio = reference.decode(ref_codes, return_dict=False)
        codes = ours.encode(wav)
        audio = ours.decode(ref_codes)
        result["codes_equal_fraction"] = float((codes == ref_codes).float().mean())
        result["decode_max_abs_diff_over_peak"] = float((audio - ref_audio).abs().max() / ref_audio.abs().max())
        result["n_q"] = int(codes.shape[1])
        for name, enc, dec in (
            ("transformers", lambda: reference.encode(wav, return_dict=False), lambda: reference.decode(ref_codes)),
            ("tunesmith", lambda: ours.encode(wav), lambda: ours.decode(ref_codes)),
        ):
            with torch.no_grad():
                rows.append({"impl": name, "encode_s": timed(enc, repeats), "decode_s": timed(dec, repeats)})
    else:
        torch.manual_seed(0)
        ours = HiggsAudioTokenizer(HiggsTokenizerConfig.from_dict(RELEASED)).eval()
        codes = ours.encode(wav)
        result["n_q"] = int(codes.shape[1])
        with torch.no_grad():
            rows.append(
                {
                    "impl": "tunesmith",
                    "encode_s": timed(lambda: ours.encode(wav), repeats),
                    "decode_s": timed(lambda: ours.decode(codes), repeats),
                }
            )
    for row in rows:
        row["encode_x_realtime"] = seconds / row["encode_s"]
        row["decode_x_realtime"] = seconds / row["decode_s"]
    result["rows"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"HiggsAudio v2 tokenizer, released shape, random weights, {seconds:g} s clip, {result['threads']} threads")
    if "codes_equal_fraction" in result:
        print(
            f"codes equal to transformers: {result['codes_equal_fraction']:.4f} of {result['n_q']} × frames; "
            f"decoded max |diff| / peak: {result['decode_max_abs_diff_over_peak']:.2e}"
        )
    print("| impl | encode s | encode × real time | decode s | decode × real time |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['impl']} | {row['encode_s']:.3f} | {row['encode_x_realtime']:.1f} | {row['decode_s']:.3f} | "
            f"{row['decode_x_realtime']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
