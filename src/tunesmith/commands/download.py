"""`tunesmith download fma|jamendo --to DIR`: the official archives, resumable, verified, safely unpacked."""

from __future__ import annotations

import argparse
import json
import queue
import shlex
import threading
from typing import Any

from tunesmith.commands.argtypes import number

MIB = 1 << 20


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, metavar="DIR", help="folder to download and unpack into")
    p.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="a mirror holding the archives at the official paths (default: the dataset's own servers)",
    )
    p.add_argument(
        "--checksums",
        default=None,
        metavar="FILE",
        help="checksum list ('HEX  NAME' lines as sha1sum/sha256sum write them, optionally '  BYTES'): "
        "replaces the built-in checksums (and sizes) of the archives it names, e.g. for a repacking mirror",
    )
    p.add_argument("--jobs", type=number(int, ge=1, le=64), default=2, help="archives fetched at once (default 2)")
    p.add_argument(
        "--connections",
        type=number(int, ge=1, le=32),
        default=1,
        help="parallel ranged connections per archive, for links that throttle each connection (default 1; "
        "parts of at least --min-part-size, joined at the end: one extra copy on disk)",
    )
    p.add_argument(
        "--min-part-size",
        type=number(float, gt=0),
        default=64.0,
        metavar="MIB",
        help="smallest part of an archive fetched on its own connection, MiB (default 64)",
    )
    p.add_argument(
        "--retries", type=number(int, ge=0, le=100), default=6, help="failed attempts in a row before giving up"
    )
    p.add_argument(
        "--backoff", type=number(float, ge=0, le=600), default=1.0, help="first retry wait, s; doubles (default 1)"
    )
    p.add_argument(
        "--timeout", type=number(float, gt=0, le=3600), default=30.0, help="seconds without data = dropped (30)"
    )
    p.add_argument("--no-extract", action="store_true", help="download and verify only")
    p.add_argument(
        "--remove-archives",
        action="store_true",
        help="delete each archive once verified and unpacked (a re-run then checks the unpacked files' sizes)",
    )
    p.add_argument(
        "--prepare",
        default=None,
        metavar="OUT",
        help="then run `tunesmith prepare DIR --out OUT` as each audio archive completes",
    )
    p.add_argument(
        "--prepare-args",
        default="",
        metavar="ARGS",
        help='more `tunesmith prepare` options for --prepare, one quoted string, e.g. "--max-tracks 500"',
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run, uses_torch=False)  # no torch import at start-up (thread policy)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from tunesmith.data.download.catalogue import FMA_SIZES, JAMENDO_SETS

    p = subparsers.add_parser(
        "download",
        help="download FMA or MTG-Jamendo: resumable, checksum-verified, safely unpacked",
        description="Fetch a dataset's official archives into DIR: resumes after a kill or a dropped connection "
        "(HTTP Range), retries with backoff, verifies the published checksums before unpacking, refuses "
        "archive entries that would escape DIR and links, checks free disk space first. Running it again "
        "after completion only verifies. Chain into `tunesmith prepare` with --prepare OUT.",
    )
    kinds = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    fma = kinds.add_parser("fma", help="Free Music Archive (github.com/mdeff/fma)")
    fma.add_argument("--size", choices=FMA_SIZES, default="small", help="which audio archive (default small)")
    _common(fma)
    jam = kinds.add_parser("jamendo", help="MTG-Jamendo (github.com/MTG/mtg-jamendo-dataset)")
    jam.add_argument(
        "--set",
        dest="set_name",
        choices=JAMENDO_SETS,
        default="raw_30s/audio-low",
        help="<dataset>/<type>: all raw_30s tracks or the mood/theme subset, 320 kbps (audio) or "
        "low-quality mono (audio-low); default raw_30s/audio-low",
    )
    jam.add_argument("--parts", default=None, metavar="LIST", help="tar parts, e.g. 0-9 or 0,3,5-7 (default all 100)")
    jam.add_argument("--no-metadata", action="store_true", help="skip the autotagging tsv")
    _common(jam)


def _archives(args: argparse.Namespace) -> list[Any]:
    from tunesmith.data.download import (
        apply_checksums,
        fma_archives,
        jamendo_archives,
        parse_parts,
        read_checksum_list,
    )

    if args.dataset == "fma":
        archives = fma_archives(args.size)
    else:
        archives = jamendo_archives(args.set_name, parse_parts(args.parts), metadata=not args.no_metadata)
    if args.checksums:
        archives = apply_checksums(archives, read_checksum_list(args.checksums))
    return archives


def _prepare_namespace(folder: str, out: str, extra: str, dataset: str) -> argparse.Namespace:
    from tunesmith.commands import prepare
    from tunesmith.errors import UserError

    parser = argparse.ArgumentParser(prog="tunesmith download --prepare-args", exit_on_error=False)
    prepare.add_parser(parser.add_subparsers(dest="command"))
    argv = ["prepare", folder, "--out", out, "--source", dataset, *shlex.split(extra)]
    try:
        return parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as err:
        raise UserError(f"--prepare-args {extra!r}: {err}") from None


def run(args: argparse.Namespace) -> int:
    from tunesmith.data.download import DownloadOptions, RetryPolicy, download_archives

    archives = _archives(args)
    options = DownloadOptions(
        base_url=args.base_url,
        jobs=args.jobs,
        connections=args.connections,
        min_part_size=max(1, int(args.min_part_size * MIB)),
        policy=RetryPolicy(retries=args.retries, backoff=args.backoff, timeout=args.timeout),
        extract=not args.no_extract,
        progress=not args.no_progress,
        remove_archives=args.remove_archives,
    )
    if args.remove_archives and args.no_extract:
        from tunesmith.errors import UserError

        raise UserError("--remove-archives deletes archives after unpacking; it cannot go with --no-extract")
    prepare_ns = None
    if args.prepare:
        if args.no_extract:
            from tunesmith.errors import UserError

            raise UserError("--prepare needs the archives unpacked; drop --no-extract")
        prepare_ns = _prepare_namespace(args.to, args.prepare, args.prepare_args, args.dataset)
    if prepare_ns is None:
        report = download_archives(archives, args.to, options)
    else:
        report = _download_and_prepare(archives, args, options, prepare_ns)
    _print_report(report, args.json)
    return 1 if report["failed"] else 0


def _download_and_prepare(archives: list[Any], args: argparse.Namespace, options: Any, prepare_ns: Any) -> dict:
    """Downloads on a background thread; `prepare` on this one each time an audio archive is ready (once the
    metadata archives are), so tracks are prepared while the next archives arrive."""
    from tunesmith.commands import prepare
    from tunesmith.data.download import download_archives

    ready: queue.Queue[Any] = queue.Queue()
    result: dict[str, Any] = {}

    def download() -> None:
        try:
            result["report"] = download_archives(archives, args.to, options, on_ready=ready.put)
        except BaseException as err:  # re-raised on the main thread
            result["error"] = err
        finally:
            ready.put(None)

    thread = threading.Thread(target=download, name="download", daemon=True)
    thread.start()
    metadata = {a.name for a in archives if a.role == "metadata"}
    done: set[str] = set()
    prepared_after: set[str] = set()
    while True:
        archive = ready.get()
        if archive is None:
            break
        done.add(archive.name)
        audio_ready = {a for a in done if a not in metadata}
        if metadata <= done and audio_ready - prepared_after:
            prepared_after |= audio_ready
            prepare.run(prepare_ns)
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["report"]


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    from tunesmith.data.download.preflight import human

    if as_json:
        print(json.dumps(report, indent=1))
        return
    for row in report["archives"]:
        state = {"complete": "already complete, verified", "done": "ok", "failed": "FAILED"}.get(row["status"], "?")
        line = f"{row['name']}: {state}"
        if row["fetched"]:
            line += f", fetched {human(row['fetched'])}"
        if row["resumed_from"]:
            line += f" (resumed at {human(row['resumed_from'])})"
        if row["extracted_files"]:
            line += f", {row['extracted_files']} files unpacked"
        if row["removed"]:
            line += ", archive removed"
        if row["reason"]:
            line += f": {row['reason']}"
        print(line)
    print(
        f"{report['folder']}: downloaded {human(report['downloaded_bytes'])}, {report['verified']} verified, "
        f"{report['extracted_files']} files unpacked, {len(report['failed'])} failed, {report['seconds']:.1f} s"
    )
