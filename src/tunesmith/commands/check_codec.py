"""`tunesmith check codec RUN_OR_MODEL`: a codec's reconstruction quality, as a table (or JSON) and wav pairs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from tunesmith.eval.codec import CHECK_MAX_SECONDS, CHECK_NUM_SAMPLES, SISNR_CONVENTION


def add_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "codec",
        help="reconstruction quality of a codec (SI-SNR, mel distance, L1, MSE) with wav pairs to listen to",
        description=(
            "Encode and decode dataset segments with a codec (a run folder, checkpoint or exported model) and report "
            f"SI-SNR, mel distance, L1 and MSE per clip and on average. {SISNR_CONVENTION}."
        ),
    )
    p.add_argument("codec", help="codec run folder, checkpoint folder or model directory")
    p.add_argument("--data", type=Path, default=None, help="prepared dataset (default: the one the run trained on)")
    p.add_argument("--split", default="valid", choices=("valid", "train"), help="which split to draw clips from")
    p.add_argument(
        "--num-samples",
        type=int,
        default=CHECK_NUM_SAMPLES,
        help=f"clips to check, spread over the split (default {CHECK_NUM_SAMPLES}; training's evaluate stage and "
        "`tunesmith review` use the run's check.num_samples)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=CHECK_MAX_SECONDS,
        help=f"cut clips to this length (default {CHECK_MAX_SECONDS:g}; training: check.max_seconds)",
    )
    p.add_argument("--bandwidth", type=float, default=None, help="kbps (default: all codebooks)")
    p.add_argument("--out", type=Path, default=None, help="folder for wav pairs and report (default: RUN/check/...)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.eval.codec import check_codec_path

    report, out = check_codec_path(
        args.codec,
        data=args.data,
        split=args.split,
        num_samples=args.num_samples,
        max_seconds=args.max_seconds,
        bandwidth=args.bandwidth,
        out=args.out,
        device=args.device,
    )
    if args.json:
        print(json.dumps({**report.to_dict(), "out": str(out), "clip_set": _clip_set(report)}, indent=2))
        return 0
    _print_table(report, out)
    return 0


def _print_table(report: Any, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from tunesmith.eval.codec import COLLAPSE_SHARE, METRICS

    bw = f"{report.bandwidth_kbps:g} kbps" if report.bandwidth_kbps is not None else "?"
    table = Table(title=f"codec check: {report.sample_rate} Hz, {bw}, {report.n_q} codebooks")
    for col in ("clip", "s", "SI-SNR dB ↑", "mel ↓", "L1 ↓", "MSE ↓"):
        table.add_column(col, justify="left" if col == "clip" else "right")
    for c in report.clips:
        table.add_row(c.name, f"{c.seconds:.1f}", f"{c.sisnr:.2f}", f"{c.mel:.4f}", f"{c.l1:.5f}", f"{c.mse:.6f}")
    m = report.mean
    table.add_row("mean", "", f"{m['sisnr']:.2f}", f"{m['mel']:.4f}", f"{m['l1']:.5f}", f"{m['mse']:.6f}", style="bold")
    console = Console()
    console.print(table)
    if report.codebooks:
        usage = ", ".join(f"{u.used}/{u.bins} (perplexity {u.perplexity:.0f})" for u in report.codebooks)
        console.print(f"codes used per codebook: {usage}")
        if collapsed := report.collapsed():
            console.print(
                f"[yellow]codebook(s) {collapsed} use few codes (perplexity < {COLLAPSE_SHARE:.0%} of the bins): "
                "the quantizer has collapsed there, so those tokens carry little for an LM to learn; train longer "
                "or check model.dead_code_threshold[/yellow]"
            )
    console.print(
        f"Measured on {_clip_set(report)} (--num-samples, --max-seconds). Training's evaluate stage and `tunesmith "
        "review` measure the run's own clips (check.num_samples, check.max_seconds): their numbers, code perplexity "
        "above all, differ unless the clips are the same."
    )
    console.print(f"{SISNR_CONVENTION}. Wav pairs and report: {out}")
    if not all(math.isfinite(getattr(c, k)) for c in report.clips for k in METRICS):
        console.print("[yellow]some metrics are not finite (silent clips?)[/yellow]")


def _clip_set(report: Any) -> str:
    from tunesmith.eval.codec import clip_set_text

    return clip_set_text([c.name for c in report.clips], [c.seconds for c in report.clips])
