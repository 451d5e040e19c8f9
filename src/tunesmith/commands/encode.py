"""`tunesmith encode DATA --codec RUN_OR_MODEL [--bandwidth B]`: build (or finish) the dataset's token cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encode",
        help="encode a prepared dataset into codec tokens once (resumable token cache for LM training)",
        description=(
            "Encode every segment of DATA's train and valid splits with a codec into integer shards under "
            "DATA/tokens/<codec fingerprint>/. Running it again skips what is cached and resumes an interrupted "
            "encode; a different codec or bandwidth gets its own cache, a re-prepared dataset is re-encoded."
        ),
    )
    p.add_argument("data", type=Path, help="prepared dataset folder (tunesmith prepare ... --out DATA)")
    p.add_argument("--codec", required=True, help="codec run folder, checkpoint or model directory")
    p.add_argument("--bandwidth", type=float, default=None, help="kbps (default: all codebooks)")
    p.add_argument("--batch-size", type=int, default=16, help="segments encoded together (default %(default)s)")
    p.add_argument("--shard-size", type=int, default=256, help="segments per shard (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default %(default)s)")
    p.add_argument("--split", action="append", choices=("train", "valid"), help="only this split (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.data.token_cache import SplitStats, ensure_token_cache

    stats: list[SplitStats] = []
    cache = ensure_token_cache(
        args.data,
        args.codec,
        bandwidth=args.bandwidth,
        batch_size=args.batch_size,
        progress=not args.no_progress and not args.json,
        device=args.device,
        shard_size=args.shard_size,
        splits=tuple(args.split or ("train", "valid")),
        stats=stats,
    )
    codec_info = json.loads((cache / "codec.json").read_text())
    summary = {
        "cache": str(cache),
        "fingerprint": codec_info["fingerprint"],
        "bandwidth_kbps": codec_info["bandwidth_kbps"],
        "n_q": codec_info["n_q"],
        "frame_rate": codec_info["frame_rate"],
        "splits": {
            s.split: {
                "segments": s.segments,
                "skipped": s.skipped,
                "encoded_now": s.encoded_now,
                "audio_seconds": round(s.audio_seconds, 3),
                "wall_seconds": round(s.wall_seconds, 3),
                "audio_seconds_per_second": round(s.audio_seconds_per_second, 2),
            }
            for s in stats
        },
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for name, s in summary["splits"].items():
        done = (
            f"encoded {s['encoded_now']} now ({s['audio_seconds_per_second']} audio s/s)"
            if s["encoded_now"]
            else "already cached"
        )
        skipped = f", {s['skipped']} skipped (see log)" if s["skipped"] else ""
        print(f"{name}: {s['segments']} segments{skipped}; {done}")
    print(f"token cache: {cache} ({summary['n_q']} codebooks, {summary['frame_rate']:g} frames/s)")
    return 0
