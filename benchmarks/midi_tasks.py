"""Piano tasks on real scores: free-running velocity fill vs the constant-mean baseline, and repairs.

The corpus is the one the ``music21`` PyPI package ships (MusicXML/kern/ABC scores of Beethoven, Mozart,
Haydn, Schumann, Chopin, Joplin, Bach …; velocities come from the scores' dynamics marks as music21 writes
them to MIDI). It is never committed: ``--music21 DIR`` names a folder where music21 is installed
(``pip install --no-deps --target DIR music21 more-itertools jsonpickle webcolors chardet``), and the
converted files land under ``benchmarks/.work/midi_tasks/``. Steps:

1. convert up to ``--max-files`` scores to MIDI (a MAESTRO-layout folder: ``<composer>/<file>.mid`` and a
   ``maestro-v3.0.0.csv`` with a held-out split by file hash: 70 % train, 15 % validation, 15 % test),
2. ``prepare_midi`` it,
3. pretrain ``--preset`` (default ``tiny``), then fine-tune ``--finetune-preset`` (default ``velocity-tiny``)
   on it, each at its preset's own budget (epochs x updates_per_epoch, lr schedule) unless
   ``--pretrain-updates`` / ``--finetune-updates`` replace it with one epoch of that many updates;
   ``--preset piano-cpu --finetune-preset velocity-cpu`` is the CPU-sized pair,
4. ``evaluate_midi_run`` on the test split: free-running velocity MAE and correlation (greedy and sampled)
   beside the train-mean baseline (and the copy baseline of denoising),
5. continue test-piece prompts with ``generate_notes`` and count the decoder's repairs (expected 0).

    python benchmarks/midi_tasks.py --music21 /path/to/pylib [--max-files 40] [--quick]
    python benchmarks/midi_tasks.py --music21 /path/to/pylib --preset piano-cpu --finetune-preset velocity-cpu
    python benchmarks/midi_tasks.py --performances DIR --preset piano-cpu --finetune-preset velocity-cpu \
        --work benchmarks/.work/midi_performances      # real performances: MAESTRO files, see --performances

Prints a markdown table and writes JSON (default benchmarks/.work/midi_tasks/results.json).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "midi_tasks"
COMPOSERS = (
    "beethoven",
    "mozart",
    "haydn",
    "schumann_robert",
    "schumann_clara",
    "chopin",
    "joplin",
    "schubert",
    "handel",
    "cpebach",
    "weber",
    "beach",
    "corelli",
    "monteverdi",
    "verdi",
    "liliuokalani",
    "johnson_j_r",
)
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid", ".midi")


def list_scores(music21_dir: Path, max_files: int) -> list[tuple[str, Path]]:
    """(composer, score path) from the corpus, composers in turn so a small cap still mixes them."""
    corpus = music21_dir / "music21" / "corpus"
    per = {c: sorted(p for p in (corpus / c).rglob("*") if p.suffix.lower() in SCORE_SUFFIXES) for c in COMPOSERS}
    out: list[tuple[str, Path]] = []
    while len(out) < max_files and any(per.values()):
        for composer in COMPOSERS:
            if per[composer] and len(out) < max_files:
                out.append((composer, per[composer].pop(0)))
    return out


def split_of(name: str) -> str:
    u = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 2**32
    return "train" if u < 0.70 else "validation" if u < 0.85 else "test"


def convert(music21_dir: Path, max_files: int, out: Path, per_file_s: float) -> dict:
    """Write the MAESTRO-layout folder (cached: files already converted are kept)."""
    import multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    corpus = music21_dir / "music21" / "corpus"
    seen: set[str] = set()
    for composer, score in list_scores(music21_dir, max_files):
        rel = f"{composer}/{'-'.join(score.relative_to(corpus / composer).with_suffix('').parts)}.mid"
        if rel in seen:  # the same work in two formats (movement1.mxl and movement1.krn): keep the first
            continue
        seen.add(rel)
        target = out / rel
        failed_mark = target.with_suffix(".failed")
        if not target.is_file() and not failed_mark.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            proc = mp.get_context("spawn").Process(
                target=_convert_one, args=(str(music21_dir), str(score), str(target))
            )
            proc.start()
            proc.join(per_file_s)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            if not target.is_file():
                failed_mark.write_text("conversion failed or timed out\n")
        if not target.is_file():
            failed.append(rel)
            continue
        from tunesmith.models.midi.notes import read_midi

        notes = read_midi(target)
        if not len(notes):
            failed.append(rel)
            continue
        rows.append(
            {
                "canonical_composer": composer.replace("_", " ").title(),
                "canonical_title": Path(rel).stem,
                "split": split_of(rel),
                "midi_filename": rel,
                "duration": round(float(notes.end.max()), 3),
                "year": "2026",
            }
        )
    with (out / "maestro-v3.0.0.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {
        "files": len(rows),
        "failed": failed,
        "splits": {s: sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")},
    }


def performances(src: Path, out: Path) -> dict:
    """A MAESTRO-layout folder of real piano *performances* (velocities as played, not dynamics marks): every
    ``*.mid`` under ``src`` copied to ``out`` with a ``maestro-v3.0.0.csv``; split by sorted name — the last
    file is the held-out test piece, the one before it validation, the rest train (at least 3 files)."""
    import shutil

    files = sorted(p for p in src.rglob("*.mid") if p.is_file())
    from tunesmith.models.midi.notes import read_midi

    files = [p for p in files if len(read_midi(p))]
    if len(files) < 3:
        raise SystemExit(f"{src}: need at least 3 non-empty MIDI performances, found {len(files)}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, path in enumerate(files):
        split = "test" if i == len(files) - 1 else "validation" if i == len(files) - 2 else "train"
        shutil.copyfile(path, out / path.name)
        notes = read_midi(out / path.name)
        rows.append(
            {
                "canonical_composer": "unknown",
                "canonical_title": path.stem,
                "split": split,
                "midi_filename": path.name,
                "duration": round(float(notes.end.max()), 3),
                "year": "2018",
            }
        )
    with (out / "maestro-v3.0.0.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {
        "source": str(src),
        "files": len(rows),
        "splits": {s: [r["midi_filename"] for r in rows if r["split"] == s] for s in ("train", "validation", "test")},
    }


def _convert_one(music21_dir: str, score: str, target: str) -> None:
    sys.path.insert(0, music21_dir)
    import warnings

    warnings.filterwarnings("ignore")
    import music21

    parsed = music21.converter.parse(score)
    if isinstance(parsed, music21.stream.Opus):
        parsed = parsed.scores[0]
    try:
        midi = music21.midi.translate.music21ObjectToMidiFile(parsed)
    except music21.repeat.ExpanderException:  # badly formed repeats: play the score straight through
        for measure in parsed.recurse().getElementsByClass("Measure"):
            if isinstance(measure.leftBarline, music21.bar.Repeat):
                measure.leftBarline = None
            if isinstance(measure.rightBarline, music21.bar.Repeat):
                measure.rightBarline = None
        for mark in list(parsed.recurse().getElementsByClass("RepeatExpression")):
            mark.activeSite.remove(mark)
        midi = music21.midi.translate.music21ObjectToMidiFile(parsed)
    tmp = Path(target + ".tmp")
    tmp.write_bytes(midi.writestr())
    os.replace(tmp, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--music21", type=Path, help="folder where the music21 package is installed (scores)")
    source.add_argument(
        "--performances",
        type=Path,
        help="a folder of real piano performance MIDI files (e.g. the MAESTRO files in miditok's sdist, "
        "tests/MIDIs_one_track/Maestro_*.mid); sorted by name: last = test, one before = validation",
    )
    parser.add_argument("--max-files", type=int, default=40)
    parser.add_argument("--per-file-seconds", type=float, default=120.0, help="conversion time limit per score")
    parser.add_argument("--preset", default="tiny", help="midi preset of the pretraining run")
    parser.add_argument("--finetune-preset", default="velocity-tiny", help="midi preset of the piano-task run")
    parser.add_argument("--pretrain-updates", type=int, default=0, help="0: the --preset's own budget")
    parser.add_argument("--finetune-updates", type=int, default=0, help="0: the --finetune-preset's own budget")
    parser.add_argument("--prompts", type=int, default=4, help="continuations of test pieces (repair count)")
    parser.add_argument("--eval-records", type=int, default=0, help="test records per task (0: all)")
    parser.add_argument("--pretrained", default="", help="a finished pretraining run to fine-tune (skips step 3a)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 files, 4 updates per stage")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: tunesmith's policy, the CPUs it may use)"
    )
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.max_files = min(args.max_files, 8)
        args.pretrain_updates = args.pretrain_updates or 4
        args.finetune_updates = args.finetune_updates or 4
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    from tunesmith.runtime import apply_thread_policy

    threads = apply_thread_policy(args.threads).threads  # before torch starts OpenMP: passive wait policy
    import numpy as np
    import torch

    from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
    from tunesmith.inference.midi import generate_notes
    from tunesmith.inference.midi_eval import evaluate_midi_run
    from tunesmith.models.midi.generation import SamplingConfig
    from tunesmith.models.midi.loading import load_midi_model
    from tunesmith.tasks import build_solver

    started = time.time()
    if args.performances:
        corpus = performances(args.performances.resolve(), args.work / "corpus")
    else:
        corpus = convert(args.music21.resolve(), args.max_files, args.work / "corpus", args.per_file_seconds)
    data = args.work / "data"
    prepare_midi(args.work / "corpus", data, force=True)
    runs = args.work / "runs"

    def budget(updates: int) -> list[str]:
        return [f"train.updates_per_epoch={updates}", "train.epochs=1"] if updates else []

    common = [f"data={data}", "eval_splits={}", "generate.num_samples=0"]
    t0 = time.time()
    if args.pretrained:
        from tunesmith.artifacts import checkpoint as ckpt

        state = ckpt.load_state(ckpt.find_checkpoint(args.pretrained, which="best"))
        pre = {"run_dir": args.pretrained, "step": state.get("step")}
    else:
        over = [*common, *budget(args.pretrain_updates)]
        pre = build_solver("midi", args.preset, over, runs_dir=runs, fresh=True).fit()
    t1 = time.time()
    tune_over = [*common, f"init_from={pre['run_dir']}", "task_eval.max_records=8", *budget(args.finetune_updates)]
    tuned = build_solver("midi", args.finetune_preset, tune_over, runs_dir=runs, fresh=True).fit()
    t2 = time.time()
    report = evaluate_midi_run(
        tuned["run_dir"],
        split="test",
        checkpoint="best",
        num_samples=None,
        seed=0,
        runs_dir=None,
        sampled=True,
        max_records=args.eval_records,
    )
    t3 = time.time()
    store = MidiNotesStore(data)
    loaded = load_midi_model(pre["run_dir"])
    repairs, generated = [], 0
    for k, piece in enumerate(store.select("test")[: args.prompts]):
        notes = store.notes(piece)
        prompt = notes.take(notes.start < float(notes.start.min()) + 10.0)
        out, malformed = generate_notes(loaded, prompt, "continue", 256, SamplingConfig(1.0, 0, 0.95, seed=k))
        repairs.append(int(malformed))
        generated += len(out) - len(prompt)
    test = report.splits["test"]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": threads,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "corpus": corpus,
        "pieces": {s: len(store.select(s)) for s in store.splits()},
        "notes": int(store.summary["notes"]),
        "pretrain": {"run": pre["run_dir"], "steps": pre["step"], "seconds": round(t1 - t0, 1)},
        "finetune": {"run": tuned["run_dir"], "steps": tuned["step"], "seconds": round(t2 - t1, 1)},
        "eval_seconds": round(t3 - t2, 1),
        "presets": {"pretrain": args.preset, "finetune": args.finetune_preset},
        "budget": {
            "pretrain_updates": args.pretrain_updates or "preset",
            "finetune_updates": args.finetune_updates or "preset",
        },
        "test": test,
        "continuation_repairs": repairs,
        "continuation_notes": generated,
        "train_mean_velocity_std": float(
            np.std(np.concatenate([store.notes(i).velocity for i in store.select("train")]))
        ),
        "total_seconds": round(time.time() - started, 1),
    }
    out = args.out or args.work / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(report.table())
    print()
    print("| task | metric | model (greedy) | model (sampled) | baseline |")
    print("| --- | --- | --- | --- | --- |")
    for task in report.tasks:
        p = f"{task}/"
        base = f"mean {test[p + 'baseline_mean_velocity_mae']:.2f}"
        if p + "baseline_copy_velocity_mae" in test:
            base += f", copy {test[p + 'baseline_copy_velocity_mae']:.2f}"
        mae, s_mae = test[p + "velocity_mae"], test[p + "sampled_velocity_mae"]
        corr, s_corr = test[p + "velocity_corr"], test[p + "sampled_velocity_corr"]
        print(f"| {task} | velocity MAE | {mae:.2f} | {s_mae:.2f} | {base} |")
        print(f"| {task} | velocity corr | {corr:.3f} | {s_corr:.3f} | - |")
    print(f"\ncontinuation repairs per prompt: {repairs} ({generated} notes generated)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
