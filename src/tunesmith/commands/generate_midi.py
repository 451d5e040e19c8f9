"""`tunesmith generate-midi RUN --prompt FILE.mid --tokens N`: continue a piece, or fill in velocities."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunesmith.inference.midi import CONTINUE, TASKS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate-midi",
        help="continue a MIDI piece with a piano GPT, or fill in its velocities (--task velocity)",
        description=(
            "Load a MIDI GPT (run folder, run signature, checkpoint or exported model dir) and either "
            "continue --prompt by --tokens tokens (no prompt: start from nothing), or run a piano task on it, "
            "e.g. --task velocity predicts the velocity of every prompt note (a run fine-tuned with "
            "stage=piano_task on that task). Writes a .mid; "
            "--render also writes a .wav when fluidsynth and a GM soundfont are installed."
        ),
    )
    p.add_argument("run", help="run folder, run signature (prefix), checkpoint folder or model dir")
    p.add_argument("--prompt", type=Path, default=None, help="a .mid/.midi file to continue or to fill in")
    p.add_argument("--tokens", type=int, default=512, help="new tokens to generate (continuation; default 512)")
    p.add_argument(
        "--task",
        choices=(CONTINUE, *TASKS),
        default=CONTINUE,
        help="continue (default); velocity: predict every prompt note's velocity; velocity_denoise: correct them; "
        "loud_from_soft, soft_from_loud, high_from_low, low_from_high: add the other half to the prompt's notes; "
        "high/low/loud/soft_quartile: add that quartile; infill_span: fill a gap in the prompt; "
        "pitch_denoise / time_denoise: write the prompt's notes again with wrong pitches / onset jitter corrected "
        "(the run must be fine-tuned on that task)",
    )
    p.add_argument("--out", type=Path, default=None, help="output .mid (default: <prompt>_<task>.mid or sample.mid)")
    p.add_argument("--which", default="best", help="checkpoint of a run: best (default) or last")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-seconds", type=float, default=0.0, help="use only the first N seconds of the prompt")
    p.add_argument("--render", action="store_true", help="also render a .wav with fluidsynth (when installed)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument(
        "--composer",
        default=None,
        help="for a model trained with tokenizer.conditioning=[composer,...]: generate in this composer's style "
        "(one of the composers it was trained with, or 'other'); default: unconditioned",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="for a model trained with tokenizer.conditioning=[dataset,...]: generate like this source dataset "
        "(one it was trained with, or 'other'); default: unconditioned",
    )
    p.add_argument(
        "--key",
        default=None,
        help="for a model trained with tokenizer.conditioning=[key,...]: the key, e.g. 'Eb major' or 'f# minor'",
    )
    p.add_argument(
        "--tempo",
        type=float,
        default=None,
        help="for a model trained with tokenizer.conditioning=[tempo,...]: the tempo in quarter notes per minute",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance scale for a conditioned model: logits = uncond + G*(cond - uncond), "
        "uncond = every condition token dropped; 1 (default) = plain conditional, > 1 follows the conditions "
        "more strongly, 0 = unconditional",
    )
    p.add_argument("--runs-dir", type=Path, default=None, help="where run folders live, for a run signature")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.errors import UserError
    from tunesmith.inference.midi import generate_midi
    from tunesmith.models.midi.generation import SamplingConfig
    from tunesmith.models.sampling import check_sampling

    try:
        check_sampling(args.temperature, args.top_k, args.top_p)
    except ValueError as err:
        raise UserError(f"--{str(err).split('=')[0].replace('_', '-')}: {err}") from None
    if args.tokens < 1:
        raise UserError(f"--tokens {args.tokens}: must be >= 1")
    if not args.guidance >= 0:
        raise UserError(f"--guidance {args.guidance}: must be >= 0")
    if args.task != CONTINUE and args.prompt is None:
        raise UserError(f"--task {args.task} works on the notes of --prompt FILE.mid: pass --prompt")
    if args.prompt is not None and not args.prompt.is_file():
        raise UserError(f"--prompt {args.prompt}: no such file")
    result = generate_midi(
        args.run,
        args.prompt,
        args.out,
        task=args.task,
        tokens=args.tokens,
        sampling=SamplingConfig(args.temperature, args.top_k, args.top_p, args.seed, guidance=args.guidance),
        prompt_seconds=args.prompt_seconds,
        which=args.which,
        device=args.device,
        render=args.render,
        runs_dir=args.runs_dir,
        composer=args.composer,
        dataset=args.dataset,
        key=args.key,
        tempo=args.tempo,
    )
    if args.json:
        print(json.dumps(result.summary()))
    else:
        rendered = f"; {result.wav}" if result.wav else ""
        print(
            f"wrote {result.out}: {result.notes} notes ({result.prompt_notes} from the prompt), "
            f"{result.malformed} malformed note groups repaired{rendered}"
        )
    return 0
