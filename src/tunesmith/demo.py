"""`make demo` (``python -m tunesmith.demo``): all of tunesmith on built-in synthetic music, on a CPU.

synthetic dataset → tiny codec → token cache → tiny text-conditioned LM → a few generated prompts →
review pages, each stage the same ``tunesmith`` command a user would type (printed before it runs).
Nothing is downloaded. Every stage resumes, so running it again continues an interrupted demo and
redoes nothing that is finished. Ends with the paths to open, a summary table (codec SI-SNR, LM valid
cross-entropy, generation speed) and the next commands for one's own music; the same numbers and
the stage times go to ``OUT/summary.json``.

The full demo's budgets (tracks, updates) are sized to finish in under 15 minutes on 2 CPU cores;
``--quick`` shrinks every budget to a smoke test of the whole chain (about a minute or two).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

PROMPTS = (
    "electronic, techno, saw lead, synth bass, drums, 128 bpm, dark, driving",
    "ambient, drone, warm pad, sub drone, 64 bpm, calm, dreamy",
    "classical, piano solo, piano, piano arpeggio, 88 bpm, gentle, romantic",
    "chiptune, 8-bit video game, square lead, triangle bass, drums, 160 bpm, playful, happy",
    "jazz, swing, vibraphone, upright bass, drums, 120 bpm, relaxed",
    "rock, hard rock, distorted guitar, electric bass, drums, 130 bpm, powerful",
)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of everything the demo makes. Sizes are in tracks, seconds and optimizer updates."""

    num_tracks: int
    track_seconds: float
    segment_seconds: float
    codec_epochs: int
    codec_updates: int  # per epoch
    codec_check_clips: int
    lm_epochs: int
    lm_updates: int  # per epoch
    lm_batch: int
    lm_segment_seconds: float
    num_prompts: int
    seconds_per_prompt: float
    review_prompts: int
    review_seconds: float


FULL = Budget(
    num_tracks=60,
    track_seconds=15.0,
    segment_seconds=5.0,
    codec_epochs=20,
    codec_updates=50,
    codec_check_clips=4,
    lm_epochs=18,
    lm_updates=50,
    lm_batch=8,
    lm_segment_seconds=5.0,
    num_prompts=6,
    seconds_per_prompt=5.0,
    review_prompts=4,
    review_seconds=4.0,
)
QUICK = Budget(
    num_tracks=6,
    track_seconds=4.0,
    segment_seconds=2.0,
    codec_epochs=1,
    codec_updates=2,
    codec_check_clips=2,
    lm_epochs=2,
    lm_updates=2,
    lm_batch=4,
    lm_segment_seconds=1.0,
    num_prompts=2,
    seconds_per_prompt=0.5,
    review_prompts=2,
    review_seconds=0.5,
)


# --------------------------------------------------------------------------- stages


STAGES = 7


@dataclasses.dataclass
class StageTime:
    name: str
    seconds: float  # wall clock
    cpu_seconds: float  # user + system, this process and its children
    command: str


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Demo:
    """Runs the stages in order through the CLI's entry point and remembers where things landed."""

    def __init__(self, out: Path, budget: Budget, device: str, console: Any) -> None:
        self.out = out
        self.budget = budget
        self.device = device
        self.console = console
        self.data = out / "data"
        self.runs = out / "runs"
        self.generated = out / "generated"
        self.times: list[StageTime] = []

    # ------------------------------------------------------------------ helpers

    def _stage(self, number: int, title: str, argv: list[str]) -> None:
        """Print the command, run it in this process through tunesmith.cli.main, time it."""
        from tunesmith.cli import main

        shown = "tunesmith " + " ".join(_quote(a) for a in argv)
        self.console.rule(f"[bold]{number}/{STAGES} {title}")
        self.console.print(f"$ {shown}", style="cyan", highlight=False, soft_wrap=True)
        start, cpu = time.perf_counter(), _cpu_seconds()
        code = main(argv)
        seconds = time.perf_counter() - start
        self.times.append(StageTime(title, seconds, _cpu_seconds() - cpu, shown))
        if code not in (0, None):
            raise UserError(f"stage {number} ({title}) failed with exit code {code}; fix the cause above and run the "
                            "demo again: finished stages are not redone")  # fmt: skip
        self.console.print(f"[green]✓[/green] {title}: {seconds:.1f} s ({self.times[-1].cpu_seconds:.1f} CPU s)")

    def _run_dir(self, task: str, overrides: list[str]) -> Path:
        from tunesmith.artifacts.runs import signature
        from tunesmith.config import resolve
        from tunesmith.tasks import solver_class

        cls = solver_class(task)
        return self.runs / task / signature(resolve(task, cls.config_class, "tiny", overrides))

    def _device_override(self) -> list[str]:
        return [] if self.device == "auto" else [f"train.device={self.device}"]

    def _inference_device(self) -> str:
        from tunesmith.runtime import pick_device

        return str(pick_device()) if self.device == "auto" else self.device

    # ------------------------------------------------------------------ the chain

    def codec_overrides(self) -> list[str]:
        b = self.budget
        return [
            f"data={self.data}",
            f"train.epochs={b.codec_epochs}",
            f"train.updates_per_epoch={b.codec_updates}",
            f"check.num_samples={b.codec_check_clips}",
            f"check.max_seconds={min(4.0, b.segment_seconds)}",
            *self._device_override(),
        ]

    def lm_overrides(self, codec_run: Path) -> list[str]:
        b = self.budget
        return [
            f"data={self.data}",
            f"codec={codec_run}",
            f"train.epochs={b.lm_epochs}",
            f"train.updates_per_epoch={b.lm_updates}",
            f"dataset.batch_size={b.lm_batch}",
            f"dataset.segment_seconds={b.lm_segment_seconds}",
            f"generate.duration={b.review_seconds}",
            f"optim.warmup_steps={min(50, b.lm_epochs * b.lm_updates // 4)}",
            *self._device_override(),
        ]

    def run(self) -> dict[str, Any]:
        b = self.budget
        self.out.mkdir(parents=True, exist_ok=True)
        self._stage(
            1,
            "synthetic dataset",
            ["prepare", "--source", "synthetic", "--out", str(self.data), "--sample-rate", "16000",
             "--segment", f"{b.segment_seconds:g}", "--min-segment", f"{b.segment_seconds / 2:g}",
             "--num-tracks", str(b.num_tracks), "--track-duration", f"{b.track_seconds:g}", "--valid-fraction", "0.1"],
        )  # fmt: skip
        codec_overrides = self.codec_overrides()
        codec_run = self._run_dir("codec", codec_overrides)
        self._stage(2, "tiny codec", ["train", "codec", "tiny", *codec_overrides, "--runs-dir", str(self.runs)])
        device = self._inference_device()
        self._stage(3, "token cache", ["encode", str(self.data), "--codec", str(codec_run), "--device", device])
        lm_overrides = self.lm_overrides(codec_run)
        lm_run = self._run_dir("lm", lm_overrides)
        self._stage(4, "tiny text-to-music LM", ["train", "lm", "tiny", *lm_overrides, "--runs-dir", str(self.runs)])
        prompts_file = self.out / "prompts.txt"
        prompts_file.write_text("".join(p + "\n" for p in PROMPTS[: b.num_prompts]), encoding="utf-8")
        self._stage(
            5,
            "generate prompts",
            ["generate", str(lm_run), "--prompts", str(prompts_file), "--out", str(self.generated),
             "--duration", f"{b.seconds_per_prompt:g}", "--device", device],
        )  # fmt: skip
        self._stage(6, "LM review page", ["review", str(lm_run), "--num-prompts", str(b.review_prompts),
                                          "--device", device])  # fmt: skip
        self._stage(7, "codec review page", ["review", str(codec_run), "--device", device])
        return self.summary(codec_run, lm_run)

    # ------------------------------------------------------------------ results

    def summary(self, codec_run: Path, lm_run: Path) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "codec_run": str(codec_run),
            "lm_run": str(lm_run),
            "codec_sisnr_db": codec_sisnr(codec_run),
            "codec_codes": codec_code_use(codec_run),
            "lm_valid_ce": lm_valid_ce(lm_run),
            "generation": generation_speed(self.generated),
            "pages": {
                "lm": str(lm_run / "samples" / "index.html"),
                "codec": str(codec_run / "samples" / "index.html"),
            },
            "generated": str(self.generated),
            "stages": [dataclasses.asdict(t) for t in self.times],
            "total_seconds": sum(t.seconds for t in self.times),
        }


def _quote(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in " ,;") else arg


def _history(run_dir: Path) -> list[dict]:
    from tunesmith.review import read_history

    return read_history(run_dir / "history.jsonl")


def codec_sisnr(run_dir: Path) -> float | None:
    """The codec check's mean SI-SNR (dB, higher is better) at the run's last evaluation."""
    records = [r for r in _history(run_dir) if r.get("stage") == "evaluate" and isinstance(r.get("sisnr"), float)]
    return float(records[-1]["sisnr"]) if records else None


def codec_code_use(run_dir: Path) -> dict[str, Any] | None:
    """Each codebook's code perplexity at the codec's last evaluation (bins = all codes used evenly,
    1 = collapsed) and the codebook size, from history.jsonl and run.json."""
    records = [r for r in _history(run_dir) if r.get("stage") == "evaluate" and "code_ppl_q0" in r]
    if not records:
        return None
    last = records[-1]
    perplexities = [float(last[f"code_ppl_q{k}"]) for k in range(len(last)) if f"code_ppl_q{k}" in last]
    try:
        bins = int(json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["config"]["model"]["bins"])
    except (OSError, ValueError, KeyError, TypeError):
        bins = None
    return {"perplexity": perplexities, "bins": bins}


def lm_valid_ce(run_dir: Path) -> dict[str, float] | None:
    """Best valid cross-entropy (nats per codebook token), its perplexity and epoch."""
    records = [r for r in _history(run_dir) if r.get("stage") == "valid" and isinstance(r.get("loss"), float)]
    if not records:
        return None
    best = min(records, key=lambda r: r["loss"])
    first = records[0]["loss"]
    return {"ce": best["loss"], "ppl": math.exp(min(best["loss"], 50.0)), "epoch": best["epoch"], "first_ce": first}


def generation_speed(out: Path) -> dict[str, float] | None:
    """Audio seconds generated per wall-clock second over ``results.jsonl`` (>1 = faster than real time)."""
    path = out / "results.jsonl"
    if not path.is_file():
        return None
    audio = wall = 0.0
    items = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            audio += float(record["audio_seconds"])
            wall += float(record["seconds"])
            items += 1
        except (ValueError, KeyError, TypeError):
            continue
    if not items or wall <= 0:
        return None
    return {"items": items, "audio_seconds": audio, "seconds": wall, "real_time_factor": audio / wall}


def health_notes(summary: dict[str, Any]) -> list[str]:
    """Plain warnings when the numbers say something went wrong (on the demo's data or one's own)."""
    notes = []
    sisnr, ce = summary.get("codec_sisnr_db"), summary.get("lm_valid_ce")
    if sisnr is not None and sisnr < 0:
        notes.append(
            f"codec SI-SNR is {sisnr:.1f} dB (below 0): its reconstructions are not yet close to the input; "
            "listen on the codec review page, and train the codec longer before relying on its tokens"
        )
    codes = summary.get("codec_codes")
    if codes and codes["bins"]:
        from tunesmith.eval.codec import COLLAPSE_SHARE

        collapsed = [k for k, ppl in enumerate(codes["perplexity"]) if ppl < COLLAPSE_SHARE * codes["bins"]]
        if collapsed:
            notes.append(
                f"codec codebook(s) {collapsed} use few of their {codes['bins']} codes "
                f"(perplexity below {COLLAPSE_SHARE:.0%}): "
                "the quantizer collapsed there; train the codec longer or check model.dead_code_threshold"
            )
    if ce is not None and ce["ppl"] < 1.2:
        notes.append(
            f"LM perplexity {ce['ppl']:.3f} is near 1: the codec uses very few distinct codes (codebook collapse?), "
            "so there is almost nothing for the LM to learn; fix the codec before training the LM longer"
        )
    return notes


def print_summary(summary: dict[str, Any], console: Any, quick: bool) -> None:
    from rich.table import Table

    table = Table(title="tunesmith demo" + (" (--quick: tiny budgets, numbers mean nothing)" if quick else ""))
    table.add_column("what", style="bold")
    table.add_column("result", justify="right")
    table.add_column("meaning")
    sisnr = summary["codec_sisnr_db"]
    table.add_row("codec SI-SNR", f"{sisnr:.2f} dB" if sisnr is not None else "—",
                  "reconstruction quality on held-out clips (higher is better)")  # fmt: skip
    codes = summary.get("codec_codes")
    if codes:
        of_bins = f" of {codes['bins']}" if codes["bins"] else ""
        use = " / ".join(f"{p:.0f}" for p in codes["perplexity"]) + of_bins
        table.add_row("codec code use", use, "code perplexity per codebook (even use = codebook size; collapse = 1)")
    ce = summary["lm_valid_ce"]
    table.add_row(
        "LM valid CE",
        f"{ce['ce']:.3g} nats" if ce else "—",
        f"perplexity {ce['ppl']:.1f} at epoch {ce['epoch']} (started at {ce['first_ce']:.3f}; lower is better)"
        if ce
        else "",
    )
    speed = summary["generation"]
    table.add_row(
        "real-time factor",
        f"{speed['real_time_factor']:.2f}×" if speed else "—",
        f"{speed['audio_seconds']:.0f} s of audio in {speed['seconds']:.1f} s of generation" if speed else "",
    )
    for stage in summary["stages"]:
        table.add_row(f"  time: {stage['name']}", f"{stage['seconds']:.1f} s", "")
    table.add_row("total time", f"{summary['total_seconds'] / 60:.1f} min", "run it again: finished stages are skipped")
    console.print(table)
    for note in health_notes(summary):
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True, highlight=False)
    lines = [
        "",
        "[bold]Open these[/bold] (in a browser; they work offline):",
        f"  LM review page, prompts × checkpoints:   {summary['pages']['lm']}",
        f"  codec review page, original vs decoded:  {summary['pages']['codec']}",
        f"  generated audio and results.jsonl:       {summary['generated']}/",
        "",
        "[bold]Now with your own music[/bold] (a folder of mp3/flac/wav/ogg/m4a files):",
        "  tunesmith prepare ~/Music --out data/mine --sample-rate 16000 --segment 5",
        "  tunesmith train codec tiny data=data/mine",
        "  tunesmith train lm tiny data=data/mine codec=runs/codec/SIGNATURE   (the codec's run folder)",
        "  tunesmith review runs/lm/SIGNATURE  ·  tunesmith serve runs/lm/SIGNATURE",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tunesmith.demo",
        description="The tunesmith demo: synthetic data → codec → token cache → LM → generation → review pages, "
        "on CPU in under 15 minutes. Run it again to resume.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="folder for everything the demo makes (default demo)")
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the chain in a minute or two")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


def main(argv: list[str] | None = None) -> int:
    import logging
    import os

    from rich.console import Console

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    budget = QUICK if args.quick else FULL
    out = args.out / "quick" if args.quick and args.out == Path("demo") else args.out
    if args.quick:
        os.environ.setdefault("TUNESMITH_NO_PROGRESS", "1")
    demo = Demo(out, budget, args.device, console)
    try:
        summary = demo.run()
    except UserError as err:
        console.print(f"[red]demo stopped:[/red] {err}")
        return 2
    except OSError as err:
        console.print(f"[red]demo stopped:[/red] cannot write under {out} ({err}); pass --out DIR")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: run the same command again to continue where it stopped")
        return 130
    summary["quick"] = args.quick
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print_summary(summary, console, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
