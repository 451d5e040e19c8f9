"""`tunesmith check data DIR`: is a prepared dataset complete, consistent and useful for conditioning?"""

from __future__ import annotations

import argparse
import json


def add_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "data",
        help="check a prepared dataset: files, durations, sample rates, captions, genres",
        description="Check that every manifest entry exists and matches its duration and sample rate; report "
        "caption coverage, description length and genres; warn when text conditioning would be useless.",
    )
    p.add_argument("dir", metavar="DIR", help="a dataset folder made by `tunesmith prepare`")
    p.add_argument("--no-audio", action="store_true", help="skip opening audio headers (faster)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.data.checks import check_dataset

    report = check_dataset(args.dir, verify_audio=not args.no_audio)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    else:
        for split in ("train", "valid"):
            s = report.stats.get(split)
            if not s:
                continue
            top = ", ".join(f"{g} {n}" for g, n in list(s["genres"].items())[:8])
            print(
                f"{split}: {s['segments']} segments, {s['hours']:.3f} h, {s['description_share']:.0%} described, "
                f"{s['avg_description_tokens']:.1f} tokens per description; genres: {top or '-'}"
            )
        for w in report.warnings:
            print(f"warning: {w}")
        for e in report.errors:
            print(f"error: {e}")
        print("ok" if report.ok else f"{report.stats.get('errors_total', len(report.errors))} error(s)")
    if not report.ok or (args.strict and report.warnings):
        return 1
    return 0
