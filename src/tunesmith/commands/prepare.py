"""`tunesmith prepare SOURCE... --out DIR`: audio → segments + AudioCraft manifests."""

from __future__ import annotations

import argparse
import json

from tunesmith.commands.argtypes import SEED, number


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="turn audio (folder, FMA, MTG-Jamendo, LJSpeech, synthetic) into segments and manifests",
        description="Decode, resample and cut audio into segments with sidecar metadata and AudioCraft "
        "manifests (DIR/egs/{train,valid}/data.jsonl). Resumable: run the same command again after an "
        "interruption, or with new files added.",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="audio folders or files, or a dataset root")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create or continue")
    p.add_argument(
        "--source",
        default="auto",
        choices=("auto", "folder", "fma", "jamendo", "ljspeech", "synthetic", "hf-dataset"),
        help="kind of SOURCE (default: detected per path); hf-dataset: a Hugging Face dataset saved with "
        "save_to_disk or as parquet files",
    )
    p.add_argument(
        "--sample-rate",
        type=number(int, ge=1000, le=384000),
        default=32000,
        help="output sample rate in Hz (default 32000)",
    )
    p.add_argument("--channels", type=int, default=1, choices=(1, 2), help="output channels (default 1)")
    p.add_argument(
        "--segment", type=number(float, gt=0, le=3600), default=10.0, help="segment length in seconds (default 10)"
    )
    p.add_argument(
        "--min-segment",
        type=number(float, ge=0, le=3600),
        default=5.0,
        help="keep a tail at least this long (default 5)",
    )
    p.add_argument(
        "--valid-fraction", type=number(float, ge=0, lt=1), default=0.1, help="share of tracks in valid (default 0.1)"
    )
    p.add_argument("--seed", type=SEED, default=0, help="split seed (and synthetic generation seed)")
    p.add_argument("--format", default="wav", choices=("wav", "flac"), help="segment file format (default wav)")
    p.add_argument(
        "--workers", type=number(int, ge=1, le=1024), default=1, help="parallel worker processes (default 1)"
    )
    p.add_argument("--num-tracks", type=number(int, ge=1), default=None, help="synthetic: number of tracks")
    p.add_argument(
        "--track-duration",
        type=number(float, gt=0, le=86400),
        default=None,
        help="synthetic: track length, s (default: --segment)",
    )
    p.add_argument(
        "--silence-db", type=number(float, le=0), default=-60.0, help="drop segments quieter than this RMS (dBFS)"
    )
    p.add_argument(
        "--speech",
        action="store_true",
        help="folder sources hold transcribed speech: SRC/<speaker>/<clip>.wav + <clip>.txt (the transcript); "
        "each clip is one utterance, never cut; clips without a transcript are skipped",
    )
    p.add_argument(
        "--max-seconds",
        type=number(float, gt=0, le=86400),
        default=None,
        help="skip transcribed utterances (ljspeech, --speech) longer than this, s (default: --segment); "
        "speech models: e.g. 30",
    )
    _add_subset_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _add_subset_arguments(p: argparse.ArgumentParser) -> None:
    """--max-tracks, --include/--exclude (every source) and the hf-dataset column flags."""
    p.add_argument(
        "--max-tracks",
        type=number(int, ge=1),
        default=None,
        metavar="N",
        help="a deterministic subset of N tracks: the same N for the same --seed, chosen by hash of the track id "
        "(adding files does not reshuffle it)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=None,
        metavar="FILTER",
        help="keep only tracks matching: a glob on the path relative to SOURCE (fma_small/000/*), or KEY=PATTERN "
        "on metadata (genre=Rock, moods=*calm*); repeatable",
    )
    p.add_argument(
        "--exclude", action="append", default=None, metavar="FILTER", help="drop tracks matching (as --include)"
    )
    p.add_argument("--audio-column", default=None, help="hf-dataset: the audio column (default: found)")
    p.add_argument(
        "--text-column", default=None, help="hf-dataset: the caption column (default text|caption|description|prompt)"
    )
    p.add_argument(
        "--columns",
        action="append",
        default=None,
        metavar="FIELD=COLUMN",
        help="hf-dataset: music fields from columns, e.g. genre=style,moods=mood_tags; repeatable",
    )


def _subset_options(args: argparse.Namespace) -> dict:
    from tunesmith.data.hf_dataset import parse_column_map

    hf = {"audio_column": args.audio_column, "text_column": args.text_column, "columns": parse_column_map(args.columns)}
    return {"max_tracks": args.max_tracks, "include": args.include, "exclude": args.exclude, "hf_options": hf}


def run(args: argparse.Namespace) -> int:
    from tunesmith.data.prepare import prepare_dataset

    summary = prepare_dataset(
        args.sources,
        args.out,
        source=args.source,
        sample_rate=args.sample_rate,
        channels=args.channels,
        segment=args.segment,
        min_segment=args.min_segment,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        format=args.format,
        workers=args.workers,
        num_tracks=args.num_tracks,
        track_duration=args.track_duration,
        progress=not args.no_progress,
        silence_db=args.silence_db,
        speech=args.speech,
        max_seconds=args.max_seconds,
        **_subset_options(args),
    )
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
        return 0
    counts, hours, run_info = summary["counts"], summary["hours"], summary["run"]
    print(
        f"{summary['root']}: {counts['tracks']['total']} tracks, {counts['segments']['total']} segments "
        f"(train {counts['segments']['train']}, valid {counts['segments']['valid']}), "
        f"{hours['total']:.3f} h; caption coverage {summary['caption_coverage']:.0%}"
    )
    print(
        f"this run: {run_info['processed']} processed, {run_info['rejected']} rejected, "
        f"{run_info['skipped_already_done']} already done, {run_info['seconds']:.1f} s"
    )
    if counts["rejected"]:
        print(f"{counts['rejected']} inputs not used: see {summary['root']}/rejected.jsonl")
    for code, n in (counts.get("rejected_by") or {}).items():
        what = {"no_transcript": "without a transcript", "too_long": "too long (--max-seconds)"}.get(code, code)
        print(f"{n} clips skipped: {what}")
    if counts["silent_segments_dropped"]:
        print(f"{counts['silent_segments_dropped']} near-silent segments dropped")
    return 0
