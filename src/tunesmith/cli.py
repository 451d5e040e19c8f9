"""The `tunesmith` command: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from tunesmith import __version__

# subcommand module → each defines add_parser(subparsers) and a run(args) set as func.
COMMAND_MODULES: tuple[str, ...] = (
    "tunesmith.commands.doctor",
    "tunesmith.commands.prepare",
    "tunesmith.commands.check",
    "tunesmith.commands.train",
    "tunesmith.commands.curriculum",
    "tunesmith.commands.encode",
    "tunesmith.commands.runs",
    "tunesmith.commands.generate",
    "tunesmith.commands.review",
    "tunesmith.commands.serve",
    "tunesmith.commands.import_hf",
    "tunesmith.commands.merge",
    "tunesmith.commands.export",
    "tunesmith.commands.verify",
    "tunesmith.commands.prepare_midi",
    "tunesmith.commands.generate_midi",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Train music and audio generation models: prepare, train codec/LM/MIDI GPT, "
        "generate, review, serve, import/export Hugging Face MusicGen.",
    )
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):  # that command is not part of this build
                continue
            # one broken optional command must not take the others down; `tunesmith doctor` says why
            print(f"tunesmith: warning: command module {name} unavailable ({err})", file=sys.stderr)
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tunesmith.config import ConfigError
    from tunesmith.errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose or os.environ.get("TUNESMITH_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as err:
        if args.verbose:
            raise
        print(f"tunesmith: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
