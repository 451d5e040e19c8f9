"""`tunesmith doctor`: versions, devices, memory, disk, and what is missing for which feature."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor", help="check the installation: versions, devices, what is missing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.environment import PROGRAMS, collect
    from tunesmith.team import report as team_report
    from tunesmith.team import report_lines

    report = collect(getattr(args, "threads", None))
    report["team_config"] = team_report()  # the active team/cluster config and where its folders point
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"tunesmith {report['tunesmith']}  python {report['python']}  torch {report['torch']}"
        f"  CUDA {report['cuda'] or 'none'}"
    )
    print(f"platform   {report['platform']}")
    threads = report["threads"]
    print(
        f"CPU        {threads['usable_cpus']} usable CPU(s), RAM {report['ram_gb']} GB, free disk here "
        f"{report['disk_free_gb']} GB"
    )
    print(f"threads    {threads['threads']} torch thread(s), OpenMP wait {threads['wait_policy']} "
          f"({'; '.join(threads['reasons'])}); override with --threads N or $TUNESMITH_THREADS")  # fmt: skip
    if threads["load_warning"]:
        print(f"           warning: {threads['load_warning']}")
    if report["devices"]:
        for d in report["devices"]:
            print(
                f"GPU {d['index']}      {d['name']} ({d['memory_gb']} GB, {d['free_gb']} GB free, "
                f"capability {d['capability']}, bf16 {'yes' if d['bf16'] else 'no'})"
            )
    else:
        print("GPU        none (training runs on CPU in fp32; precision=auto picks bf16 on GPUs that support it)")
    print(f"precision  auto → {report['precision_auto']}")
    print("features:")
    for feature, status in report["features"].items():
        mark = "ok " if status["ok"] else "MISSING"
        extra = f"  ({', '.join(status['missing'])}: {status['fix']})" if not status["ok"] else ""
        print(f"  [{mark}] {feature}{extra}")
    print("programs:")
    for name, path in report["programs"].items():
        print(f"  [{'ok ' if path else '-- '}] {name}: {path or 'not found'} — {PROGRAMS[name]}")
    for line in report_lines(report["team_config"]):
        print(line)
    for note in report.get("notes", []):
        print(f"note: {note}")
    return 0
