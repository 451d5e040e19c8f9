"""The ``tunesmith review`` subcommand: its arguments, ``--list-epochs``, and the summary it prints
(plain or ``--json``) after a review.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tunesmith.review.lm_samples import DEFAULT_NUM_PROMPTS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "review",
        help="listen across checkpoints: fixed-seed samples of every checkpoint on one offline HTML page",
        description=(
            "For each checkpoint of RUN (numbered, best, last) generate the same prompts with the same seeds "
            "(LM runs; tts runs: the same texts and speakers), reconstruct the same dataset clips (codec runs) or "
            "do the same piano tasks (MIDI runs: piano rolls), skipping what exists, and write "
            "RUN/samples/index.html: a grid of samples × checkpoints with audio players and mel spectrograms, "
            "the loss/metric curves and the config delta. The page works offline. Run it again after more "
            "training: only new checkpoints (and a changed last/best) are generated."
        ),
    )
    p.add_argument("run", help="run folder, task/signature, or a signature prefix (see `tunesmith runs list`)")
    p.add_argument("--epochs", default="all", help="all (default) or a comma list of epochs and best/last: 2,5,best")
    p.add_argument(
        "--prompts",
        type=Path,
        help="LM and tts runs: prompts file (JSON lines or plain lines, as for `tunesmith generate`); replaces the "
        "review's stored prompts. Default: the stored prompts, else the run's generate prompts/texts or dataset texts",
    )
    p.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        help=f"LM/tts: default prompts made the first time ({DEFAULT_NUM_PROMPTS}); codec: clips (check.num_samples); "
        "MIDI: pieces",
    )
    p.add_argument(
        "--duration", type=float, default=None, help="seconds per LM/tts sample (default: the run's generate settings)"
    )
    p.add_argument("--data", type=Path, default=None, help="codec runs: dataset (default: the one it trained on)")
    p.add_argument("--list-epochs", action="store_true", help="list the run's checkpoints and exit")
    p.add_argument("--index-only", action="store_true", help="only rewrite index.html from the samples that exist")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--runs-dir", type=Path, default=None, help="where run folders live (default: ./runs)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def _list_epochs(run_dir: Path, as_json: bool) -> int:
    from tunesmith.review.checkpoints import checkpoint_samples

    rows = checkpoint_samples(run_dir)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"{run_dir}: no checkpoints yet")
    else:
        print(f"{'checkpoint':<14}{'epoch':>7}{'step':>9}{'samples':>9}")
        for r in rows:
            print(f"{r['name']:<14}{r['epoch'] if r['epoch'] is not None else '-':>7}"
                  f"{r['step'] if r['step'] is not None else '-':>9}{r['samples']:>9}")  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    from tunesmith.artifacts.runs import find_run
    from tunesmith.review.runner import review_run

    path = Path(args.run)
    run_dir = path if (path / "checkpoints").is_dir() else find_run(args.run, args.runs_dir)
    if args.list_epochs:
        return _list_epochs(run_dir, args.json)
    from tunesmith.runtime import pick_device

    device = str(pick_device()) if args.device == "auto" else args.device
    result = review_run(
        run_dir,
        epochs=args.epochs,
        prompts=args.prompts,
        index_only=args.index_only,
        duration=args.duration,
        num_prompts=args.num_prompts,
        data=args.data,
        device=device,
    )
    s = result.stats
    if args.json:
        print(json.dumps({"index": str(result.index), "task": result.task, "checkpoints": result.checkpoints,
                          **dataclasses.asdict(s), "skipped_lines": result.problems}))  # fmt: skip
    else:
        print(
            f"{len(result.checkpoints)} checkpoints: {s.generated} samples made, {s.reused} shared with identical "
            f"weights, {s.existing} already there"
            + (f"; unusable: {', '.join(s.skipped_checkpoints)}" if s.skipped_checkpoints else "")
        )
        print(f"review page: {result.index}")
    return 1 if result.problems or s.skipped_checkpoints else 0
