"""The `tunesmith` command: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from tunesmith import __version__

log = logging.getLogger("tunesmith")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_TIME_FORMAT = "%H:%M:%S"

# subcommand module → each defines add_parser(subparsers) and a run(args) set as func (and
# ``uses_torch=False`` in set_defaults when it never runs torch: the thread policy then skips importing it).
COMMAND_MODULES: tuple[str, ...] = (
    "tunesmith.commands.doctor",
    "tunesmith.commands.download",
    "tunesmith.commands.prepare",
    "tunesmith.commands.check",
    "tunesmith.commands.train",
    "tunesmith.commands.curriculum",
    "tunesmith.commands.encode",
    "tunesmith.commands.runs",
    "tunesmith.commands.generate",
    "tunesmith.commands.eval",
    "tunesmith.commands.review",
    "tunesmith.commands.serve",
    "tunesmith.commands.import_hf",
    "tunesmith.commands.merge",
    "tunesmith.commands.export",
    "tunesmith.commands.verify",
    "tunesmith.commands.prepare_midi",
    "tunesmith.commands.generate_midi",
    "tunesmith.commands.grid",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Train music and audio generation models: prepare, train codec/LM/MIDI GPT, "
        "generate, review, serve, import/export Hugging Face MusicGen.",
    )
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: the CPUs this process may use: affinity, cgroup quota, Slurm, "
        "shared by the ranks of a host; or $TUNESMITH_THREADS)",
    )
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
    from tunesmith.engine.signals import TrainingStopped
    from tunesmith.errors import UserError
    from tunesmith.runtime import apply_thread_policy

    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose or os.environ.get("TUNESMITH_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_TIME_FORMAT)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    previous_threads = _torch_threads()
    try:
        from tunesmith.team import resolve_cli_paths

        resolve_cli_paths(args)  # //reference/... in path arguments (tunesmith.team)
        policy = apply_thread_policy(args.threads, uses_torch=getattr(args, "uses_torch", True))
        log.info("threads: %s", policy.describe())
        if policy.load_warning:
            log.warning("%s", policy.load_warning)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `tunesmith ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (UserError, ConfigError) as err:
        if args.verbose:
            raise
        print(f"tunesmith: error: {err}", file=sys.stderr)
        return 2
    except TrainingStopped as err:  # SIGINT/SIGTERM/SIGUSR1 during train: checkpoint written, resumable
        print(f"tunesmith: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous_threads is not None:  # called in-process (tests, the demo): leave torch as it was
            import torch

            torch.set_num_threads(previous_threads)


def _torch_threads() -> int | None:
    """torch's thread count when torch is already imported in this process, else None."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


if __name__ == "__main__":
    sys.exit(main())
