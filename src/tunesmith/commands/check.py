"""`tunesmith check data|codec ...`: one command, one module per kind of check."""

from __future__ import annotations

import argparse
import importlib

CHECK_MODULES: tuple[str, ...] = ("tunesmith.commands.check_data", "tunesmith.commands.check_codec")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check", help="check a prepared dataset or a codec's quality")
    kinds = parser.add_subparsers(dest="check_kind", metavar="KIND")
    for name in CHECK_MODULES:
        importlib.import_module(name).add_parser(kinds)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
