"""`tunesmith verify DIR`: check a model directory's config and checksums."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("verify", help="check a model directory's config and checksums")
    p.add_argument("path", type=Path)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.models.export import verify_model_dir

    problems = verify_model_dir(args.path)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(f"{args.path}: ok (config and checksums verified)")
    return 0
