"""`tunesmith check data|codec ...`: each kind of check lives in its own module."""

from __future__ import annotations

import argparse
import importlib

CHECK_MODULES: tuple[str, ...] = ("tunesmith.data.checks", "tunesmith.eval.codec")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check", help="check a prepared dataset or a codec's quality")
    kinds = parser.add_subparsers(dest="check_kind", metavar="KIND")
    for name in CHECK_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue
            raise
        module.add_parser(kinds)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
