"""Reliability sweep of the installed ``tunesmith`` CLI: kill matrix, corruption, bad inputs and the server.

What it runs (issues 13 and 21), every case through ``sys.executable -m tunesmith`` in a subprocess, each
judged CLEAN or FAILURE with a one-line reason:

- kill matrix: SIGKILL (the whole process group) at seeded random points of ``train codec``, ``train lm``,
  ``prepare``, ``encode`` and ``generate --prompts``, and right after a checkpoint's ``.last.tmp-*`` folder
  (or a generated file's temp file) appears; then the same command again. CLEAN when the per-step training
  losses of history.jsonl (and the final weights) equal an uninterrupted run's, encode / prepare / generate
  finish with each item exactly once and bit-identical to an uninterrupted run, and no temp leftovers remain;
- data loss and writes outside the target: ``export --out`` onto an unrelated folder (with and without
  ``--force``), ``--force`` onto a tunesmith-written dir, a manifest naming ``../../payload.txt``;
- corruption: truncated / bit-flipped / poisoned ``state.pt`` (a pickle that would ``touch`` a marker file,
  its manifest updated to match), one bit flipped in place in ``last/model.safetensors``, a truncated
  token-cache shard (``encode`` and ``train lm``), damaged model dirs for ``verify``;
- bad inputs: out-of-range config values and CLI options, ``verify`` on malformed config.json, presets;
- server: ``tunesmith serve`` on 127.0.0.1 (a free port, an API key): docs and health without the key, wrong
  key, malformed requests, 64 slow clients, the connection limit, a non-ASCII key.

Only loopback traffic; nothing is downloaded. Tiny fixtures (8 kHz synthetic data, a tiny codec and LM, the
uninterrupted reference runs) are built once under benchmarks/.work/sweep/fixtures/ and rebuilt when the
recipe or tunesmith's source changes (under a minute); each case works in its own folder under
benchmarks/.work/sweep/cases/. The full sweep (57 cases) takes about 4-5 minutes on 2 shared CPU cores, at
most 10 (no case starts after ``--budget``, default 570 s: those count as failures; every command has a
timeout); ``--quick`` (34 cases) about 2-3 minutes. Kill points are seeded (``--seed``, default 0).

    .venv/bin/python benchmarks/sweep.py                 # everything
    .venv/bin/python benchmarks/sweep.py --quick         # a subset
    .venv/bin/python benchmarks/sweep.py --only 'kill-*' # cases whose name matches (glob, or a substring)

Prints one line per case and ends with exactly "N tried, M clean, K failures" (exit status 1 when K > 0);
writes benchmarks/.work/sweep/report.json.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import http.client
import importlib.util
import json
import os
import pickle
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "sweep"
FIXTURES = WORK / "fixtures"
CASES = WORK / "cases"
REPORT = WORK / "report.json"

TRACEBACK = "Traceback (most recent call last)"
ERROR_LINE = re.compile(r"^tunesmith(?: [\w-]+)*: error: .*$", re.MULTILINE)
RESUMED = re.compile(r"resumed from (\S+): epoch (\d+), step (\d+)")
TEMP_NAME = re.compile(r"^\..+\.tmp(?:-\d+|\.\d+\.[0-9a-f]+.*)$")
BIG = 2**64  # 18446744073709551616: past every 64-bit seed

# ------------------------------------------------------------------------------------------- recipes

PREPARE_SMALL = [
    "prepare", "--source", "synthetic", "--out", "data", "--sample-rate", "8000", "--segment", "0.75",
    "--min-segment", "0.5", "--num-tracks", "4", "--track-duration", "1.5", "--valid-fraction", "0.34",
    "--no-progress",
]  # fmt: skip
PREPARE_BIG = [
    "prepare", "--source", "synthetic", "--out", "big", "--sample-rate", "8000", "--segment", "0.75",
    "--min-segment", "0.5", "--num-tracks", "24", "--track-duration", "3", "--valid-fraction", "0.25",
    "--workers", "1", "--no-progress",
]  # fmt: skip
ENCODE_BIG = ["encode", "big", "--codec", "codec", "--batch-size", "1", "--shard-size", "4", "--no-progress"]
LOGS = ["train.log.every_steps=1", "train.log.progress=false", "train.log.tensorboard=false"]
CODEC_EPOCHS, LM_EPOCHS, UPDATES = 3, 4, 2
CODEC = [
    "data=data", "model.sample_rate=8000", "model.n_filters=4", "model.dimension=8", "model.ratios=[8,4]",
    "model.lstm=1", "model.n_q=2", "model.bins=16", "model.q_dropout=false", "model.kmeans_iters=2",
    "dataset.batch_size=2", "dataset.segment_duration=0.25", "dataset.valid_duration=0.5",
    "loss.mel_range_start=5", "loss.mel_range_end=8", "loss.mel_n_mels=16", "loss.adversarial_start=0",
    "discriminator.filters=4", "discriminator.n_ffts=[128,64]", "discriminator.hop_lengths=[32,16]",
    "check.num_samples=1", "check.max_seconds=0.5", f"train.epochs={CODEC_EPOCHS}",
    f"train.updates_per_epoch={UPDATES}", "train.checkpoint.keep_last=1", *LOGS,
]  # fmt: skip
LM = [
    "data=data", "codec=codec", "model.transformer.dim=16", "model.transformer.num_layers=1",
    "model.transformer.num_heads=2", "model.transformer.ffn_dim=32", "model.transformer.max_seq_len=128",
    "model.conditioner.vocab_size=32", "model.conditioner.text_max_len=16", "model.conditioner.text_dim=8",
    "model.conditioner.text_layers=1", "model.conditioner.text_heads=2", "dataset.batch_size=2",
    "dataset.segment_seconds=0.1", "optim.warmup_steps=2", "generate.num_samples=1", "generate.duration=0.1",
    "generate.top_k=5", f"train.epochs={LM_EPOCHS}", f"train.updates_per_epoch={UPDATES}",
    "train.checkpoint.keep_last=1", *LOGS,
]  # fmt: skip
TRAIN_CODEC = ["train", "codec", "tiny", *CODEC, "--runs-dir", "runs"]
TRAIN_LM = ["train", "lm", "tiny", *LM, "--runs-dir", "runs"]
PARTIAL_EPOCHS = 2  # the corruption cases' LM runs stop after this epoch (of LM_EPOCHS)
PROMPTS = [{"prompt": f"calm ambient pad {i}", "seed": i, "duration": 0.3} for i in range(12)]
GENERATE_OPTS = ["--prompts", "prompts.jsonl", "--out", "gen", "--batch-size", "1", "--top-k", "5", "--json"]

# run in a subprocess: `python -c BOOT STOP ARGS...`: the CLI, interrupted (Ctrl-C) right after epoch STOP's
# checkpoints are written, as tests/fixtures/legacy_v1/make_fixtures.py makes its partial runs
BOOT = """
import sys
stop, args = int(sys.argv[1]), sys.argv[2:]
from tunesmith.engine.solver import Solver
original = Solver.save_checkpoints
def save_then_stop(self, improved):
    original(self, improved)
    if self.epoch == stop:
        raise KeyboardInterrupt
Solver.save_checkpoints = save_then_stop
from tunesmith.cli import main
sys.exit(main(args))
"""

# --------------------------------------------------------------------------------------- subprocesses


def env() -> dict[str, str]:
    """This environment, deterministic and quiet, with no runs folder or API key inherited."""
    out = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    for key in ("TUNESMITH_RUNS", "TUNESMITH_API_KEY", "TUNESMITH_THREADS"):
        out.pop(key, None)
    return out


def command(args: Iterable[str]) -> list[str]:
    return [sys.executable, "-m", "tunesmith", "--threads", "1", *args]


@dataclass
class Proc:
    """A finished (or killed) subprocess."""

    args: list[str]
    rc: int
    out: str
    err: str
    seconds: float
    timed_out: bool = False
    killed: bool = False

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err

    def tail(self) -> str:
        lines = [line for line in self.err.splitlines() if line.strip()] or self.out.splitlines() or [""]
        return lines[-1][:160]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and everything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run(args: list[str], cwd: Path, *, timeout: float = 180, raw: bool = False) -> Proc:
    """``tunesmith ARGS`` in ``cwd`` (``raw``: ARGS is the whole command line), killed after ``timeout`` s."""
    cmd = args if raw else command(args)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    return Proc(cmd, proc.returncode, out, err, time.monotonic() - start, timed_out)


def run_until(args: list[str], cwd: Path, trigger: Callable[[], bool], *, timeout: float = 180) -> Proc:
    """Start ``tunesmith ARGS`` and SIGKILL its process group as soon as ``trigger()`` holds (polled about
    every millisecond); ``killed`` is False when it finished first."""
    cmd = command(args)
    logs = cwd / f"sweep-killed-{time.monotonic_ns()}"  # the killed command's output, kept for a look
    start = time.monotonic()
    with open(f"{logs}.out", "w") as out_f, open(f"{logs}.err", "w") as err_f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=out_f, stderr=err_f, start_new_session=True)
        killed = timed_out = False
        while proc.poll() is None:
            if time.monotonic() - start > timeout:
                kill_group(proc)
                timed_out = True
                break
            try:
                fire = trigger()
            except OSError:
                fire = False
            if fire:
                kill_group(proc)
                killed = True
                break
            time.sleep(0.001)
        proc.wait()
    out, err = Path(f"{logs}.out").read_text(errors="replace"), Path(f"{logs}.err").read_text(errors="replace")
    return Proc(cmd, proc.returncode, out, err, time.monotonic() - start, timed_out, killed)


def ok(proc: Proc, what: str) -> Proc:
    if proc.rc != 0:
        raise Failure(f"{what}: exit {proc.rc}{' (timed out)' if proc.timed_out else ''}: {proc.tail()}")
    return proc


def traceback_in(proc: Proc) -> str | None:
    if TRACEBACK in proc.text:
        lines = [line for line in proc.err.splitlines() if line.strip()]
        return f"Python traceback ({lines[-1][:120] if lines else '?'})"
    return None


def clear_error(proc: Proc) -> str | None:
    """None when ``proc`` failed with one ``tunesmith: error:`` line and no traceback; else what is wrong."""
    if proc.timed_out:
        return f"no answer within {proc.seconds:.0f} s"
    problem = traceback_in(proc)
    if problem:
        return problem
    if proc.rc == 0:
        return f"accepted (exit 0): {proc.tail()}"
    lines = ERROR_LINE.findall(proc.err)
    if len(lines) != 1:
        return f"exit {proc.rc} with {len(lines)} 'tunesmith: error:' lines in stderr: {proc.tail()}"
    return None


# ------------------------------------------------------------------------------------------ files


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder keeping hard links as hard links (checkpoints share files that way)."""
    seen: dict[tuple[int, int], Path] = {}
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        dirs.sort()
        for name in sorted(files):
            path, target = Path(root) / name, dst / rel / name
            st = path.lstat()
            if path.is_symlink():
                os.symlink(os.readlink(path), target)
            elif (st.st_dev, st.st_ino) in seen and st.st_nlink > 1:
                os.link(seen[st.st_dev, st.st_ino], target)
            else:
                shutil.copy2(path, target)
                seen[st.st_dev, st.st_ino] = target


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_hashes(folder: Path, *, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not skip(p.relative_to(folder))
    }


def leftovers(folder: Path) -> list[str]:
    """Temp files / folders of killed writers (``.x.tmp-PID``, ``.x.tmp.PID.HEX``, ``x.prev``) under ``folder``."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            if TEMP_NAME.match(name) or name.endswith(".prev") or ".tmp" in name:
                found.append((Path(root) / name).relative_to(folder).as_posix())
    return sorted(found)


def write_new(path: Path, data: bytes) -> None:
    """Replace ``path`` by a new file (a new inode: hard-linked copies keep the old bytes)."""
    path.unlink()
    path.write_bytes(data)


def flip_bit_in_place(path: Path, offset: int | None = None) -> None:
    """One bit flipped in the file itself (every hard link sees it, as with a disk error)."""
    size = path.stat().st_size
    pos = size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0x01]))


def update_manifest(folder: Path, name: str) -> None:
    """Make ``folder/manifest.json`` list ``name``'s current size and sha256 (as a careful attacker would)."""
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    path = folder / name
    manifest["files"][name] = {"bytes": path.stat().st_size, "sha256": sha(path)}
    write_new(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def history_steps(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) of every train_step line of history.jsonl, in file order."""
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in records if r.get("stage") == "train_step"]


def count_steps(history: Path) -> int:
    try:
        return history.read_bytes().count(b'"stage": "train_step"')
    except FileNotFoundError:
        return 0


def only_run(runs: Path, task: str) -> Path:
    found = sorted(p for p in (runs / task).iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(found) != 1:
        raise Failure(f"expected one {task} run in {runs}, found {[p.name for p in found]}")
    return found[0]


def source_hash() -> str:
    """sha256 over the installed tunesmith package's sources (references must come from the code under test)."""
    spec = importlib.util.find_spec("tunesmith")
    if spec is None or not spec.submodule_search_locations:
        return "not-installed"
    root = Path(list(spec.submodule_search_locations)[0])
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in {".py", ".yaml", ".yml", ".json", ".html", ".js", ".css"} and path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ fixtures


class Failure(Exception):
    """A case's verdict: FAILURE with this reason."""


class Fixtures:
    """The tiny shared inputs and references, built on first use (thread-safe) and cached on disk by key."""

    STEPS = ("data", "codec", "lm", "model", "big", "big_tokens", "genref")

    def __init__(self, root: Path, key: str) -> None:
        self.root, self.key = root, key
        self.locks = {name: threading.Lock() for name in self.STEPS}
        self.errors: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        stamp = root / "KEY"
        if not stamp.is_file() or stamp.read_text() != key:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            stamp.write_text(key)

    def get(self, name: str) -> Path:
        """Build fixture ``name`` (and what it needs) unless done; returns the fixtures folder."""
        with self.locks[name]:
            if name in self.errors:
                raise Failure(f"fixture {name!r} unavailable: {self.errors[name]}")
            done = self.root / f".done-{name}"
            if not done.is_file():
                start = time.monotonic()
                try:
                    getattr(self, f"build_{name}")()
                except Failure as exc:
                    self.errors[name] = str(exc)
                    raise Failure(f"fixture {name!r} unavailable: {exc}") from None
                except Exception as exc:
                    self.errors[name] = f"{type(exc).__name__}: {exc}"
                    raise Failure(f"fixture {name!r} unavailable: {self.errors[name]}") from None
                self.timings[name] = round(time.monotonic() - start, 1)
                done.write_text("ok")
        return self.root

    def build_data(self) -> None:
        ok(run(PREPARE_SMALL, self.root), "prepare (small data)")

    def build_codec(self) -> None:
        self.get("data")
        ok(run(TRAIN_CODEC, self.root), "train codec (reference)")
        shutil.rmtree(self.root / "codec", ignore_errors=True)
        copy_tree(only_run(self.root / "runs", "codec"), self.root / "codec")
        # the small data's token cache, so that LM runs (and copies of `data`) only read it
        ok(run(["encode", "data", "--codec", "codec", "--no-progress"], self.root), "encode (small data)")

    def build_lm(self) -> None:
        self.get("codec")
        ok(run(TRAIN_LM, self.root), "train lm (reference)")

    def build_model(self) -> None:
        self.get("lm")
        run_dir = only_run(self.root / "runs", "lm").relative_to(self.root)
        ok(run(["export", str(run_dir), "--out", "model"], self.root), "export (reference model)")

    def build_big(self) -> None:
        ok(run(PREPARE_BIG, self.root), "prepare (big data)")

    def build_big_tokens(self) -> None:
        self.get("big")
        self.get("codec")
        shutil.rmtree(self.root / "big_tokens", ignore_errors=True)
        copy_tree(self.root / "big", self.root / "big_tokens")  # `big` stays token-free for the encode kills
        proc = run([*ENCODE_BIG[:1], "big_tokens", *ENCODE_BIG[2:]], self.root)
        ok(proc, "encode (big data, reference)")

    def build_genref(self) -> None:
        self.get("model")
        ref = self.root / "genref"
        shutil.rmtree(ref, ignore_errors=True)
        ref.mkdir()
        (ref / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
        ok(run(["generate", str(self.root / "model"), *GENERATE_OPTS], ref), "generate (reference)")


# -------------------------------------------------------------------------------------------- cases


@dataclass
class Ctx:
    """What a case gets: its own empty folder, a seeded RNG, the fixtures."""

    name: str
    dir: Path
    rng: random.Random
    fx: Fixtures

    def stage(self, *names: str) -> Path:
        """Copy fixtures ``names`` (building them if needed) into the case folder; returns the fixtures root."""
        for name in names:
            step = {"data": "codec", "codec": "codec", "model": "model", "big": "big"}[name]
            root = self.fx.get(step)
            copy_tree(root / name, self.dir / name)
        return self.fx.root


Verdict = tuple[bool, str]
CaseFn = Callable[[Ctx], Verdict]


@dataclass
class Case:
    name: str
    group: str
    fn: CaseFn
    quick: bool = False
    lane: str = ""  # cases of one lane run one after the other (the server's)


@dataclass
class Result:
    name: str
    group: str
    verdict: str
    reason: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def clean(reason: str) -> Verdict:
    return True, reason


def failure(reason: str) -> Verdict:
    return False, reason


# ----------------------------------------------------------------------------------- kill matrix


def judge_training(ctx: Ctx, task: str, ref_runs: Path, note: str) -> Verdict:
    ref_dir, run_dir = only_run(ref_runs, task), only_run(ctx.dir / "runs", task)
    if ref_dir.name != run_dir.name:
        return failure(f"{note}; the re-run landed in {run_dir.name}, the reference in {ref_dir.name}")
    got, want = history_steps(run_dir), history_steps(ref_dir)
    if got != want:
        diff = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        return failure(f"{note}; per-step losses differ from the uninterrupted run (from line {diff}: {len(got)} "
                       f"train_step lines, expected {len(want)})")  # fmt: skip
    weights = "checkpoints/last/model.safetensors"
    if sha(run_dir / weights) != sha(ref_dir / weights):
        return failure(f"{note}; {weights} differs from the uninterrupted run's")
    stale = leftovers(ctx.dir / "runs")
    if stale:
        return failure(f"{note}; temp leftovers after the re-run: {', '.join(stale[:3])}")
    return clean(f"{note}; {len(got)} per-step losses and final weights equal the uninterrupted run's, no leftovers")


def kill_training(task: str, mode: str) -> CaseFn:
    """``mode``: "step" (after a random number of logged steps) or "ckpt" (while a checkpoint is written)."""

    def case(ctx: Ctx) -> Verdict:
        fixture = "codec" if task == "codec" else "lm"
        ctx.fx.get(fixture)
        ctx.stage(*(["data"] if task == "codec" else ["data", "codec"]))
        args = TRAIN_CODEC if task == "codec" else TRAIN_LM
        total = (CODEC_EPOCHS if task == "codec" else LM_EPOCHS) * UPDATES
        runs = ctx.dir / "runs"
        if mode == "step":
            at = ctx.rng.randint(1, total - 1)
            note = f"killed after step {at}"

            def trigger() -> bool:
                return any(count_steps(h) >= at for h in runs.glob(f"{task}/*/history.jsonl"))

        else:
            nth = ctx.rng.randint(1, 2)
            note = f"killed during checkpoint write #{nth}"
            seen: set[str] = set()
            writes = [0]

            def trigger() -> bool:
                names = {p.name for p in runs.glob(f"{task}/*/checkpoints/.*") if ".tmp" in p.name}
                if names - seen:
                    writes[0] += 1
                seen.clear()
                seen.update(names)
                return writes[0] >= nth

        first = run_until(args, ctx.dir, trigger)
        if not first.killed:
            return failure(f"the sweep could not time the kill ({note}): the run ended first (exit {first.rc})")
        before = leftovers(runs)
        note += f" ({len(before)} temp leftover(s) after the kill)" if before else ""
        again = run(args, ctx.dir)
        if again.rc != 0:
            return failure(f"{note}; the re-run failed: exit {again.rc}: {again.tail()}")
        return judge_training(ctx, task, ctx.fx.root / "runs", note)

    return case


def segments_of(out: Path) -> int:
    seg = out / "segments"
    if not seg.is_dir():
        return 0
    return sum(1 for d in os.scandir(seg) if d.is_dir() for f in os.scandir(d.path) if f.name.endswith(".wav"))


def manifest_entries(dataset: Path) -> dict[str, list[dict[str, Any]]]:
    """egs/{train,valid}/data.jsonl with paths relative to the dataset folder."""
    out = {}
    for split in ("train", "valid"):
        rows = []
        for line in (dataset / "egs" / split / "data.jsonl").read_text().splitlines():
            row = json.loads(line)
            path = Path(row["path"])
            row["path"] = path.relative_to(dataset.resolve()).as_posix() if path.is_absolute() else path.as_posix()
            rows.append(row)
        out[split] = rows
    return out


def kill_prepare(ctx: Ctx) -> Verdict:
    ref = ctx.fx.get("big") / "big"
    total = segments_of(ref)
    at = ctx.rng.randint(1, total - 1)
    out = ctx.dir / "big"
    first = run_until(PREPARE_BIG, ctx.dir, lambda: segments_of(out) >= at)
    note = f"killed at segment {at}/{total}"
    if not first.killed:
        return failure(f"the sweep could not time the kill ({note}): prepare ended first (exit {first.rc})")
    again = run(PREPARE_BIG, ctx.dir)
    if again.rc != 0:
        return failure(f"{note}; the re-run failed: exit {again.rc}: {again.tail()}")
    got, want = manifest_entries(out), manifest_entries(ref)
    for split in ("train", "valid"):
        paths = [r["path"] for r in got[split]]
        if len(paths) != len(set(paths)):
            return failure(f"{note}; egs/{split}/data.jsonl lists a segment twice")
        if got[split] != want[split]:
            return failure(f"{note}; egs/{split}/data.jsonl differs from an uninterrupted prepare "
                           f"({len(got[split])} rows, expected {len(want[split])})")  # fmt: skip
    segs = tree_hashes(out / "segments")
    if segs != tree_hashes(ref / "segments"):
        return failure(f"{note}; the segment files differ from an uninterrupted prepare ({len(segs)} files)")
    stale = leftovers(out)
    if stale:
        return failure(f"{note}; temp leftovers after the re-run: {', '.join(stale[:3])}")
    return clean(f"{note}; manifests and {len(segs)} segment files equal an uninterrupted prepare's, no leftovers")


def token_files(cache: Path) -> dict[str, str]:
    """sha256 of the token cache's data files (meta.json holds an absolute path and timings: left out)."""
    return tree_hashes(cache, skip=lambda rel: rel.name in {"meta.json", ".lock"} or rel.name == "codec.json")


def kill_encode(ctx: Ctx) -> Verdict:
    root = ctx.fx.get("big_tokens")
    ref_caches = sorted((root / "big_tokens" / "tokens").iterdir())
    ctx.stage("big", "codec")
    shards = ctx.dir / "big" / "tokens"
    total = len(list(ref_caches[0].glob("*/shard-*.npy")))
    at = ctx.rng.randint(1, total - 1)
    note = f"killed at shard {at}/{total}"
    first = run_until(ENCODE_BIG, ctx.dir, lambda: len(list(shards.glob("*/*/shard-*.npy"))) >= at)
    if not first.killed:
        return failure(f"the sweep could not time the kill ({note}): encode ended first (exit {first.rc})")
    again = run(ENCODE_BIG, ctx.dir)
    if again.rc != 0:
        return failure(f"{note}; the re-run failed: exit {again.rc}: {again.tail()}")
    caches = sorted(shards.iterdir())
    if [c.name for c in caches] != [c.name for c in ref_caches]:
        return failure(f"{note}; token caches {[c.name for c in caches]}, expected {[c.name for c in ref_caches]}")
    got, want = token_files(caches[0]), token_files(ref_caches[0])
    if got != want:
        differ = sorted(set(got.items()) ^ set(want.items()))
        return failure(f"{note}; the token cache differs from an uninterrupted encode ({differ[0][0]} ...)")
    for split in ("train", "valid"):
        meta = json.loads((caches[0] / split / "meta.json").read_text())
        if not meta.get("complete") or meta.get("segments") != meta.get("manifest_entries"):
            return failure(f"{note}; {split}/meta.json: complete={meta.get('complete')}, "
                           f"{meta.get('segments')} of {meta.get('manifest_entries')} segments")  # fmt: skip
    stale = leftovers(ctx.dir / "big")
    if stale:
        return failure(f"{note}; temp leftovers after the re-run: {', '.join(stale[:3])}")
    return clean(f"{note}; {len(got)} cache files bit-identical to an uninterrupted encode, no leftovers")


def result_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_generate(mode: str) -> CaseFn:
    """``mode``: "item" (after a random number of finished items) or "write" (while an output is written)."""

    def case(ctx: Ctx) -> Verdict:
        root = ctx.fx.get("genref")
        ref = root / "genref" / "gen"
        (ctx.dir / "prompts.jsonl").write_text((root / "genref" / "prompts.jsonl").read_text())
        args = ["generate", str(root / "model"), *GENERATE_OPTS]
        out = ctx.dir / "gen"
        if mode == "item":
            at = ctx.rng.randint(1, len(PROMPTS) - 1)
            note = f"killed after item {at}/{len(PROMPTS)}"

            def trigger() -> bool:
                return result_lines(out / "results.jsonl") >= at

        else:
            note = "killed while an output file was being written"

            def trigger() -> bool:
                return out.is_dir() and any(n.startswith(".") and ".tmp" in n for n in os.listdir(out))

        first = run_until(args, ctx.dir, trigger)
        if not first.killed:
            return failure(f"the sweep could not time the kill ({note}): generate ended first (exit {first.rc})")
        again = run(args, ctx.dir)
        if again.rc != 0:
            return failure(f"{note}; the re-run failed: exit {again.rc}: {again.tail()}")
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
        ref_rows = [json.loads(line) for line in (ref / "results.jsonl").read_text().splitlines() if line.strip()]
        ids = [r["id"] for r in rows]
        if len(ids) != len(set(ids)):
            return failure(f"{note}; results.jsonl lists an item twice ({len(ids)} rows, {len(set(ids))} items)")
        if sorted(ids) != sorted(r["id"] for r in ref_rows):
            return failure(f"{note}; {len(ids)} items in results.jsonl, expected {len(ref_rows)}")
        stale = leftovers(out)
        if stale:
            return failure(f"{note}; temp leftovers of the killed writer after the re-run: {', '.join(stale[:3])}")
        got = tree_hashes(out, skip=lambda rel: rel.name == "results.jsonl")
        want = tree_hashes(ref, skip=lambda rel: rel.name == "results.jsonl")
        if got.keys() != want.keys():
            extra = sorted(set(got) ^ set(want))
            return failure(f"{note}; output files differ from an uninterrupted run's: {', '.join(extra[:3])}")
        differ = [k for k in got if got[k] != want[k]]
        if differ:
            return failure(f"{note}; {len(differ)} audio file(s) not bit-identical, e.g. {differ[0]}")
        return clean(f"{note}; {len(ids)} items once each, bit-identical to an uninterrupted run, no leftovers")

    return case


# -------------------------------------------------------------------------- data loss, outside writes


def snapshot(folder: Path, *, skip: Path | None = None) -> dict[str, str]:
    return {
        k: v
        for k, v in tree_hashes(folder).items()
        if skip is None or not (folder / k).resolve().is_relative_to(skip.resolve())
    }


def export_unrelated(force: bool) -> CaseFn:
    def case(ctx: Ctx) -> Verdict:
        root = ctx.fx.get("lm")
        precious = ctx.dir / "precious"
        (precious / "sub").mkdir(parents=True)
        (precious / "notes.txt").write_text("my notes\n")
        (precious / "sub" / "song.wav").write_bytes(os.urandom(1000))
        before = tree_hashes(precious)
        run_dir = only_run(root / "runs", "lm")
        proc = run(["export", str(run_dir), "--out", str(precious), *(["--force"] if force else [])], ctx.dir)
        after = tree_hashes(precious) if precious.is_dir() else {}
        if after != before:
            lost = sorted(set(before.items()) - set(after.items()))
            added = sorted(set(after) - set(before))
            return failure(f"exit {proc.rc}; the unrelated folder changed: {len(lost)} file(s) lost/altered, "
                           f"{len(added)} added")  # fmt: skip
        problem = clear_error(proc)
        if problem:
            return failure(f"folder intact but {problem}")
        return clean(f"refused, folder intact: {ERROR_LINE.findall(proc.err)[0][:110]}")

    return case


def export_force_own(ctx: Ctx) -> Verdict:
    root = ctx.fx.get("lm")
    run_dir = str(only_run(root / "runs", "lm"))
    ok(run(["export", run_dir, "--out", "out"], ctx.dir), "first export")
    first = tree_hashes(ctx.dir / "out")
    again = run(["export", run_dir, "--out", "out"], ctx.dir)
    if again.rc == 0:
        return failure("exporting onto an existing model dir without --force was accepted")
    if tree_hashes(ctx.dir / "out") != first:
        return failure("a refused export (no --force) changed the existing model dir")
    problem = clear_error(again)
    if problem:
        return failure(f"without --force: {problem}")
    forced = run(["export", run_dir, "--out", "out", "--force"], ctx.dir)
    if forced.rc != 0:
        return failure(f"--force onto a tunesmith-written dir failed: exit {forced.rc}: {forced.tail()}")
    verified = run(["verify", "out"], ctx.dir)
    if verified.rc != 0:
        return failure(f"the --force export does not verify: {verified.out.strip()[:120]}")
    stale = leftovers(ctx.dir)
    if stale:
        return failure(f"temp leftovers: {', '.join(stale[:3])}")
    return clean("refused without --force (dir intact), replaced with --force, verifies")


def escaping_model(ctx: Ctx) -> tuple[Path, Path]:
    """A copy of the reference model at nest/deep/model whose manifest also lists ``../../payload.txt``
    (which exists, with the right checksum, at nest/payload.txt)."""
    ctx.fx.get("model")
    model = ctx.dir / "nest" / "deep" / "model"
    copy_tree(ctx.fx.root / "model", model)
    payload = ctx.dir / "nest" / "payload.txt"
    payload.write_text("written by someone else\n")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"]["../../payload.txt"] = {"bytes": payload.stat().st_size, "sha256": sha(payload)}
    write_new(model / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return model, payload


def verify_escape(ctx: Ctx) -> Verdict:
    model, _ = escaping_model(ctx)
    proc = run(["verify", str(model)], ctx.dir)
    if proc.rc == 0:
        return failure(f"verify accepted a manifest listing ../../payload.txt: {proc.out.strip()[:120]}")
    problem = traceback_in(proc)
    if problem:
        return failure(f"verify rc {proc.rc} but {problem}")
    if "payload" not in proc.text:
        return failure(f"verify rc {proc.rc} without naming the escaping path: {proc.tail()}")
    return clean(f"verify rc {proc.rc}, names the escaping path")


def export_escape(ctx: Ctx) -> Verdict:
    model, _ = escaping_model(ctx)
    out = ctx.dir / "out" / "x" / "y"
    before = snapshot(ctx.dir)
    proc = run(["export", str(model), "--out", str(out)], ctx.dir)
    after = snapshot(ctx.dir, skip=out)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        return failure(f"export (exit {proc.rc}) wrote outside --out: {', '.join(changed[:3])}")
    problem = traceback_in(proc)
    if problem:
        return failure(f"nothing written outside --out, but {problem}")
    return clean(f"nothing written outside --out (export exit {proc.rc}{': ' + proc.tail() if proc.rc else ''})")


# --------------------------------------------------------------------------------------- corruption


def resume_partial(
    ctx: Ctx,
    damage: Callable[[Path], str],
    *,
    same_step: bool = False,
    check: Callable[[Proc], str | None] | None = None,
) -> Verdict:
    """Train the LM to epoch PARTIAL_EPOCHS of LM_EPOCHS here (then Ctrl-C, in this folder: a moved data
    folder is refused on resume), damage its ``last`` checkpoint, resume with the same command: CLEAN when it
    says so, falls back past ``last``, and ends with the uninterrupted run's per-step losses and weights
    (``same_step``: resumed at the damaged checkpoint's own step, from an intact copy of it; ``check``: one
    more problem to look for in the resume's output)."""
    ctx.fx.get("lm")
    ctx.stage("data", "codec")
    stop = [sys.executable, "-c", BOOT, str(PARTIAL_EPOCHS), "--threads", "1", *TRAIN_LM]
    partial = run(stop, ctx.dir, raw=True)
    if partial.rc != 130:
        raise Failure(f"could not make the partial run (exit {partial.rc}, expected 130): {partial.tail()}")
    last = only_run(ctx.dir / "runs", "lm") / "checkpoints" / "last"
    what = damage(last)
    proc = run(TRAIN_LM, ctx.dir)
    problem = check(proc) if check else None
    if problem:
        return failure(f"{what}; {problem}")
    problem = traceback_in(proc)
    if problem:
        return failure(f"{what}; resume: {problem}")
    if proc.rc != 0:
        return failure(f"{what}; resume failed: exit {proc.rc}: {proc.tail()}")
    resumed = RESUMED.search(proc.err)
    if not resumed:
        return failure(f"{what}; no 'resumed from' line: {proc.tail()}")
    source, step = Path(resumed[1]).name, int(resumed[3])
    where = f"resumed from {source} (step {step})"
    if source == "last" or not re.search(r"checkpoints/last\b.*(unusable|corrupt|refus|not )", proc.err):
        return failure(f"{what}; did not say it fell back from the damaged 'last' ({where})")
    if same_step and step != PARTIAL_EPOCHS * UPDATES:
        return failure(f"{what}; {where}: lost more than the damaged checkpoint (it was step "
                       f"{PARTIAL_EPOCHS * UPDATES}; no intact copy of it was kept)")  # fmt: skip
    return judge_training(ctx, "lm", ctx.fx.root / "runs", f"{what}; {where}")


def truncate_state(last: Path) -> str:
    data = (last / "state.pt").read_bytes()
    write_new(last / "state.pt", data[: len(data) // 2])
    return "state.pt truncated"


def bitflip_state(last: Path) -> str:
    data = bytearray((last / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0x10
    write_new(last / "state.pt", bytes(data))
    return "one bit flipped in state.pt"


def bitflip_weights_in_place(last: Path) -> str:
    flip_bit_in_place(last / "model.safetensors")
    links = (last / "model.safetensors").stat().st_nlink
    return f"one bit flipped in place in last/model.safetensors ({links} hard link(s))"


class _Payload:
    """Unpickling this runs ``os.system(command)``: a stand-in for a malicious state.pt."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return os.system, (self.command,)


def poisoned_state(ctx: Ctx) -> Verdict:
    """A state.pt that would run ``touch MARKER`` when unpickled, its manifest updated to match: never run,
    no torch advice to retry with weights_only=False, and resume falls back to an intact checkpoint."""
    marker = ctx.dir / "MARKER"

    def poison(last: Path) -> str:
        blob = pickle.dumps({"format": 1, "step": 4, "payload": _Payload(f"touch {marker}")}, protocol=2)
        write_new(last / "state.pt", blob)
        update_manifest(last, "state.pt")
        return "poisoned state.pt (manifest updated to match)"

    said: list[str] = []

    def check(proc: Proc) -> str | None:
        said.extend(x.strip() for x in proc.err.splitlines() if "state.pt" in x)
        if marker.exists():
            return "the payload ran: MARKER was created"
        line = next((x for x in proc.text.splitlines() if "weights_only" in x or "weights only" in x.lower()), "")
        return f"the output mentions weights_only: {line.strip()[:110]}" if line else None

    verdict = resume_partial(ctx, poison, check=check)
    if verdict[0]:
        return clean(
            f"MARKER never created, no weights_only advice; {verdict[1]}; said: {said[0][-110:] if said else '?'}"
        )
    return verdict


def token_cache_copy(ctx: Ctx) -> tuple[Path, str]:
    """Stage data + codec and truncate the train split's first shard; returns (shard, its original sha)."""
    ctx.fx.get("lm")
    ctx.stage("data", "codec")
    shard = sorted((ctx.dir / "data" / "tokens").glob("*/train/shard-00000.npy"))[0]
    original = sha(shard)
    data = shard.read_bytes()
    write_new(shard, data[: len(data) // 2])
    return shard, original


def token_shard_encode(ctx: Ctx) -> Verdict:
    shard, original = token_cache_copy(ctx)
    proc = run(["encode", "data", "--codec", "codec", "--no-progress"], ctx.dir)
    problem = traceback_in(proc)
    if problem:
        return failure(f"encode on a truncated shard: {problem}")
    if proc.rc != 0:
        return failure(f"encode on a truncated shard: exit {proc.rc}: {proc.tail()}")
    if sha(shard) != original:
        return failure(f"encode exit 0 but the truncated shard was not repaired ({shard.stat().st_size} bytes)")
    return clean("encode detected the truncated shard and re-encoded it bit-identically")


def token_shard_train(ctx: Ctx) -> Verdict:
    token_cache_copy(ctx)
    proc = run(TRAIN_LM, ctx.dir)
    if "mmap" in proc.text:
        line = next(x for x in proc.text.splitlines() if "mmap" in x)
        return failure(f"train lm died with an mmap error: {line.strip()[:120]}")
    problem = traceback_in(proc)
    if problem:
        return failure(f"train lm on a truncated shard: {problem}")
    if proc.rc == 0:
        return clean("train lm repaired / re-read the cache and finished")
    problem = clear_error(proc)
    if problem:
        return failure(f"train lm on a truncated shard: {problem}")
    return clean(f"train lm refused clearly: {ERROR_LINE.findall(proc.err)[0][:110]}")


def damaged_model(edit: Callable[[Path], str], expect: tuple[str, ...]) -> CaseFn:
    """``verify`` on a copy of the reference model damaged by ``edit``: rc != 0, every problem in ``expect``
    (substrings, case-insensitive) named, no traceback."""

    def case(ctx: Ctx) -> Verdict:
        ctx.stage("model")
        what = edit(ctx.dir / "model")
        proc = run(["verify", "model"], ctx.dir, timeout=60)
        problem = traceback_in(proc)
        if problem:
            return failure(f"{what}: verify: {problem}")
        if proc.timed_out or proc.rc == 0:
            return failure(f"{what}: verify exit {proc.rc}: {proc.out.strip()[:120]}")
        missing = [e for e in expect if e.lower() not in proc.text.lower()]
        if missing:
            return failure(f"{what}: verify exit {proc.rc} but does not mention {missing}: {proc.tail()}")
        return clean(f"{what}: verify exit {proc.rc}, names {list(expect)}")

    return case


def edit_config(changes: dict[str, Any], *, manifest: bool = True, flip: str = "") -> Callable[[Path], str]:
    def edit(model: Path) -> str:
        config = json.loads((model / "config.json").read_text())
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        write_new(model / "config.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
        if manifest:
            update_manifest(model, "config.json")
        if flip:
            flip_bit_in_place(model / flip)
        parts = [f"{k}={'(removed)' if v is None else json.dumps(v)}" for k, v in changes.items()]
        return "config.json " + ", ".join(parts) + (f" and one bit flipped in {flip}" if flip else "")

    return edit


def garbage_manifest(model: Path) -> str:
    write_new(model / "manifest.json", b'{"files": {"config.json": ')
    return "manifest.json truncated mid-JSON"


def missing_weights(model: Path) -> str:
    (model / "model.safetensors").unlink()
    return "model.safetensors deleted"


def bitflip_codec(model: Path) -> str:
    flip_bit_in_place(model / "codec" / "model.safetensors")
    return "one bit flipped in codec/model.safetensors"


# --------------------------------------------------------------------------------------- bad inputs


def bad_train(override: str) -> CaseFn:
    def case(ctx: Ctx) -> Verdict:
        ctx.stage("data")
        proc = run(["train", "codec", "tiny", *CODEC, override, "--runs-dir", "runs"], ctx.dir, timeout=60)
        problem = clear_error(proc)
        if problem:
            return failure(f"{override}: {problem}")
        return clean(f"{override}: {ERROR_LINE.findall(proc.err)[0][:110]}")

    return case


def bad_cli(args: list[str], *, needs: str = "", bound: float = 30, prompts: str = "") -> CaseFn:
    """``tunesmith ARGS`` (MODEL in ARGS: the reference model) must fail with one clear error line, without a
    traceback, within ``bound`` seconds (killed at ``bound`` + 5 s). With ``prompts`` (written to
    prompts.jsonl) a ``tunesmith: skipped prompts.jsonl:LINE: ...`` line naming the bad value counts as that
    clear error (generate reports bad lines of a prompts file that way and exits 1)."""

    def case(ctx: Ctx) -> Verdict:
        root = ctx.fx.get(needs) if needs else ctx.fx.root
        if prompts:
            (ctx.dir / "prompts.jsonl").write_text(prompts)
        full = [str(root / "model") if a == "MODEL" else a for a in args]
        proc = run(full, ctx.dir, timeout=bound + 5)
        shown = " ".join(args)
        skipped = re.findall(r"^tunesmith: skipped prompts\.jsonl:\d+: .*$", proc.err, re.MULTILINE)
        if prompts and proc.rc not in (0, None) and len(skipped) == 1 and not traceback_in(proc):
            if proc.seconds > bound:
                return failure(f"{shown}: answered only after {proc.seconds:.0f} s (bound {bound:.0f} s)")
            return clean(f"{shown}: exit {proc.rc}, {skipped[0][:100]}")
        problem = clear_error(proc)
        if problem:
            return failure(f"{shown}: {problem}")
        if proc.seconds > bound:
            return failure(f"{shown}: answered only after {proc.seconds:.0f} s (bound {bound:.0f} s)")
        return clean(f"{shown}: {ERROR_LINE.findall(proc.err)[0][:100]}")

    return case


def valid_cli(args: list[str], expect: str, *, stage: tuple[str, ...] = (), label: str = "") -> CaseFn:
    """``tunesmith ARGS`` is valid: exit 0, ``expect`` in its output, no error line or traceback."""

    def case(ctx: Ctx) -> Verdict:
        ctx.stage(*stage)
        proc = run(args, ctx.dir, timeout=60)
        shown = label or " ".join(args)
        problem = traceback_in(proc)
        if problem:
            return failure(f"{shown}: {problem}")
        if proc.rc != 0:
            return failure(f"{shown}: exit {proc.rc}: {proc.tail()}")
        if expect not in proc.text:
            return failure(f"{shown}: exit 0 but {expect!r} not in its output")
        return clean(f"{shown}: exit 0, no error")

    return case


# ------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def request(port: int, method: str, path: str, *, key: str | None = None, body: bytes | None = None,
            timeout: float = 30) -> Response:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


SERVER_FLAGS = ("--host", "--port", "--api-key", "--read-timeout", "--max-connections")
READ_TIMEOUT, MAX_CONNECTIONS, SLOW_CLIENTS = 3, 80, 64


class Server:
    """One ``tunesmith serve`` of the reference model on 127.0.0.1, shared by the server cases (one lane)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.key = "sweep-" + hashlib.sha256(os.urandom(16)).hexdigest()[:24]
        self.error = ""
        self.help = ""
        self.lock = threading.Lock()
        self.log = WORK / "server.log"

    def flags(self, fx: Fixtures) -> str:
        if not self.help:
            self.help = run(["serve", "--help"], fx.root, timeout=60).out
        return self.help

    def missing(self, fx: Fixtures, *flags: str) -> list[str]:
        text = self.flags(fx)
        return [f for f in flags if not re.search(rf"(^|[\s,\[]){re.escape(f)}\b", text)]

    def start(self, fx: Fixtures) -> int:
        with self.lock:
            if self.error:
                raise Failure(self.error)
            if self.proc is not None:
                return self.port
            root = fx.get("model")
            missing = self.missing(fx, *SERVER_FLAGS)
            if missing:
                self.error = f"serve has no {', '.join(missing)} (see `tunesmith serve --help`)"
                raise Failure(self.error)
            self.port = free_port()
            limits = ["--read-timeout", str(READ_TIMEOUT), "--max-connections", str(MAX_CONNECTIONS)]
            args = ["serve", str(root / "model"), "--host", "127.0.0.1", "--port", str(self.port)]
            args += ["--api-key", self.key, *limits]
            log = open(self.log, "w")  # noqa: SIM115 - closed with the server
            self.proc = subprocess.Popen(
                command(args), cwd=root, env=env(), stdout=log, stderr=log, start_new_session=True
            )
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self.error = f"serve exited {self.proc.returncode} at start-up: {self.log_tail()}"
                    raise Failure(self.error)
                try:
                    if request(self.port, "GET", "/health", timeout=2).status == 200:
                        return self.port
                except OSError:
                    pass
                time.sleep(0.3)
            self.error = f"serve did not answer /health within 90 s: {self.log_tail()}"
            raise Failure(self.error)

    def log_tail(self) -> str:
        lines = [x for x in self.log.read_text(errors="replace").splitlines() if x.strip()] if self.log.exists() else []
        return lines[-1][:160] if lines else ""

    def alive(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"the server died (exit {self.proc.returncode}): {self.log_tail()}"
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
                self.proc.wait()


SERVER = Server()


def server_case(fn: Callable[[int, str, Ctx], Verdict]) -> CaseFn:
    def case(ctx: Ctx) -> Verdict:
        port = SERVER.start(ctx.fx)
        verdict = fn(port, SERVER.key, ctx)
        dead = SERVER.alive()
        return failure(f"{verdict[1]}; then {dead}") if dead else verdict

    return case


def srv_docs(port: int, key: str, ctx: Ctx) -> Verdict:
    served = [p for p in ("/docs", "/openapi.json", "/redoc") if request(port, "GET", p).status == 200]
    if served:
        return failure(f"served without the API key: {', '.join(served)}")
    return clean("/docs, /openapi.json and /redoc not served without the key")


def srv_health(port: int, key: str, ctx: Ctx) -> Verdict:
    resp = request(port, "GET", "/health")
    text = resp.body.decode(errors="replace")
    model = str(ctx.fx.root / "model")
    if resp.status != 200:
        return failure(f"/health without key: {resp.status}")
    if model in text or str(ctx.fx.root) in text or re.search(r"(?<![\w:])/(?:[\w.-]+/)+[\w.-]*", text):
        return failure(f"/health without key shows a filesystem path: {text[:120]}")
    return clean(f"/health without key: 200 {text[:60]}")


def srv_wrong_key(port: int, key: str, ctx: Ctx) -> Verdict:
    body = json.dumps({"prompt": "x", "duration": 0.1}).encode()
    got = {
        "GET /v1/model wrong key": request(port, "GET", "/v1/model", key=key + "x").status,
        "GET /v1/model no key": request(port, "GET", "/v1/model").status,
        "POST /v1/generate wrong key": request(port, "POST", "/v1/generate", key="wrong", body=body).status,
        "GET /v1/status no key": request(port, "GET", "/v1/status").status,
    }
    bad = {k: v for k, v in got.items() if v != 401}
    if bad:
        return failure(f"expected 401: {bad}")
    if request(port, "GET", "/v1/model", key=key).status != 200:
        return failure("the right key is not accepted on /v1/model")
    return clean("wrong or missing key → 401 on /v1/model, /v1/status, /v1/generate; right key → 200")


def srv_422(body: bytes, label: str) -> Callable[[int, str, Ctx], Verdict]:
    def fn(port: int, key: str, ctx: Ctx) -> Verdict:
        resp = request(port, "POST", "/v1/generate", key=key, body=body)
        doc = resp.json()
        message = ""
        if isinstance(doc, dict):
            message = str(doc.get("error") or doc.get("detail") or "")
        if resp.status != 422:
            return failure(f"{label}: {resp.status}, expected 422 ({resp.body[:100]!r})")
        if not message.strip():
            return failure(f"{label}: 422 without a message")
        return clean(f"{label}: 422 {message[:90]}")

    return fn


def srv_generate(port: int, key: str, ctx: Ctx) -> Verdict:
    body = json.dumps({"prompt": "bright chiptune", "duration": 0.2, "seed": 7}).encode()
    resp = request(port, "POST", "/v1/generate", key=key, body=body, timeout=60)
    if resp.status != 200 or not resp.body.startswith(b"RIFF"):
        return failure(f"a valid request: {resp.status} {resp.body[:80]!r}")
    return clean(f"a valid request: 200, {len(resp.body)} bytes of WAV")


def srv_slow_clients(port: int, key: str, ctx: Ctx) -> Verdict:
    """64 clients trickle header bytes (one every 0.5 s, never finishing): all closed by the server within
    --read-timeout + 5 s, while a normal request from another client still gets its answer."""
    socks: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: ")
            s.setblocking(False)
            socks.append(s)
        start = time.monotonic()
        bound = READ_TIMEOUT + 5
        closed: dict[int, float] = {}
        normal: list[str] = []

        def normal_request() -> None:
            try:
                normal.append(str(request(port, "GET", "/v1/model", key=key, timeout=10).status))
            except OSError as exc:
                normal.append(f"{type(exc).__name__}: {exc}")

        helper = threading.Timer(1.0, normal_request)
        helper.start()
        last_send = 0.0
        while len(closed) < len(socks) and time.monotonic() - start < bound:
            now = time.monotonic()
            send = now - last_send >= 0.5
            last_send = now if send else last_send
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    if s.recv(65536) == b"":
                        closed[i] = now - start
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    closed[i] = now - start
                    continue
                if send:
                    try:
                        s.send(b"a")
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed[i] = now - start
            time.sleep(0.05)
        helper.join(timeout=15)
    finally:
        for s in socks:
            s.close()
    if normal != ["200"]:
        return failure(f"a normal request during the slow clients got {normal or 'no answer'}")
    if len(closed) < len(socks):
        return failure(f"{len(socks) - len(closed)} of {len(socks)} slow clients still open after {bound} s "
                       f"(--read-timeout {READ_TIMEOUT})")  # fmt: skip
    return clean(f"{len(socks)} slow clients closed within {max(closed.values()):.1f} s; a normal request got 200")


def srv_connection_limit(port: int, key: str, ctx: Ctx) -> Verdict:
    """More open connections than --max-connections: a new request gets a clear 503 (or the connection is
    refused / closed), and once they are gone requests work again."""
    socks: list[socket.socket] = []
    status = ""
    try:
        for _ in range(MAX_CONNECTIONS + 8):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        time.sleep(0.3)
        try:
            status = str(request(port, "GET", "/v1/model", key=key, timeout=5).status)
        except OSError as exc:
            status = f"{type(exc).__name__}"
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    after = request(port, "GET", "/v1/model", key=key, timeout=10).status
    if status == "200":
        return failure(f"{MAX_CONNECTIONS + 8} open connections (--max-connections {MAX_CONNECTIONS}): still 200")
    if status.isdigit() and status != "503":
        return failure(f"over the connection limit: {status}, expected 503")
    if after != 200:
        return failure(f"over the limit: {status}; after the connections closed: {after}, expected 200")
    return clean(f"over --max-connections {MAX_CONNECTIONS}: {status}; afterwards 200")


def serve_refuses(key: str, label: str) -> CaseFn:
    """``serve MODEL --api-key KEY`` must refuse at start-up (one clear error, exit != 0), not start serving."""

    def case(ctx: Ctx) -> Verdict:
        root = ctx.fx.get("model")
        port = free_port()
        args = ["serve", str(root / "model"), "--host", "127.0.0.1", "--port", str(port), "--api-key", key]
        listening = [False]

        def trigger() -> bool:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    listening[0] = True
            return listening[0]

        def slow_trigger() -> bool:
            time.sleep(0.1)
            return trigger()

        proc = run_until(args, ctx.dir, slow_trigger, timeout=60)
        if listening[0]:
            return failure(f"{label}: accepted at start-up, the server listened on 127.0.0.1:{port}")
        problem = clear_error(proc)
        if problem:
            return failure(f"{label}: {problem}")
        return clean(f"{label}: refused at start-up: {ERROR_LINE.findall(proc.err)[0][:100]}")

    return case


def serve_docs_flag(ctx: Ctx) -> Verdict:
    """``--docs`` serves /docs and /openapi.json behind the key only."""
    missing = SERVER.missing(ctx.fx, "--docs")
    if missing:
        return failure("serve has no --docs flag to enable the docs")
    root = ctx.fx.get("model")
    port, key = free_port(), "docs-key-123"
    args = ["serve", str(root / "model"), "--host", "127.0.0.1", "--port", str(port), "--api-key", key, "--docs"]
    log = ctx.dir / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command(args), cwd=ctx.dir, env=env(), stdout=out, stderr=out, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if request(port, "GET", "/health", timeout=2).status == 200:
                        break
                except OSError:
                    time.sleep(0.3)
            else:
                return failure(f"serve --docs did not come up (exit {proc.poll()})")
            without = {p: request(port, "GET", p).status for p in ("/docs", "/openapi.json")}
            with_key = {p: request(port, "GET", p, key=key).status for p in ("/docs", "/openapi.json")}
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                proc.wait()
    if any(s == 200 for s in without.values()):
        return failure(f"with --docs, served without the key: {without}")
    if any(s != 200 for s in with_key.values()):
        return failure(f"with --docs and the key: {with_key}, expected 200")
    return clean(f"with --docs: without key {without}, with key 200")


# -------------------------------------------------------------------------------------------- table


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, group: str, fn: CaseFn, quick: bool = False, lane: str = "") -> None:
        out.append(Case(name, group, fn, quick, lane))

    # the server lane first: it runs beside everything else
    srv = "server"
    add("server-docs-need-key", srv, server_case(srv_docs), True, srv)
    add("server-health-no-path", srv, server_case(srv_health), True, srv)
    add("server-wrong-key-401", srv, server_case(srv_wrong_key), True, srv)
    add("server-valid-request", srv, server_case(srv_generate), False, srv)
    add("server-malformed-json-422", srv, server_case(srv_422(b'{"prompt": "x",', "malformed JSON")), True, srv)
    wrong = json.dumps({"prompt": 5, "duration": "long", "seed": "x"}).encode()
    add("server-wrong-types-422", srv, server_case(srv_422(wrong, "wrong types")), True, srv)
    huge = json.dumps({"prompt": "a" * 200_000, "duration": 0.1}).encode()
    add("server-huge-prompt-422", srv, server_case(srv_422(huge, "200,000-char prompt")), False, srv)
    neg = json.dumps({"prompt": "x", "duration": -1}).encode()
    add("server-negative-duration-422", srv, server_case(srv_422(neg, "duration -1")), True, srv)
    big = json.dumps({"prompt": "x", "duration": 1e12}).encode()
    add("server-huge-duration-422", srv, server_case(srv_422(big, "duration 1e12")), False, srv)
    seed = json.dumps({"prompt": "x", "duration": 0.1, "seed": BIG}).encode()
    add("server-huge-seed-422", srv, server_case(srv_422(seed, "seed 2**64")), False, srv)
    add("server-slow-clients", srv, server_case(srv_slow_clients), True, srv)
    add("server-connection-limit-503", srv, server_case(srv_connection_limit), False, srv)
    add("server-nonascii-key-refused", srv, serve_refuses("clé-ünïcode", "--api-key 'clé-ünïcode'"), True, srv)
    add("server-docs-flag-behind-key", srv, serve_docs_flag, False, srv)

    km = "kill"
    add("kill-train-codec-step-a", km, kill_training("codec", "step"), True)
    add("kill-train-codec-step-b", km, kill_training("codec", "step"))
    add("kill-train-codec-ckpt-write", km, kill_training("codec", "ckpt"), True)
    add("kill-train-lm-step-a", km, kill_training("lm", "step"), True)
    add("kill-train-lm-step-b", km, kill_training("lm", "step"))
    add("kill-train-lm-ckpt-write-a", km, kill_training("lm", "ckpt"), True)
    add("kill-train-lm-ckpt-write-b", km, kill_training("lm", "ckpt"))
    add("kill-prepare-a", km, kill_prepare, True)
    add("kill-prepare-b", km, kill_prepare)
    add("kill-encode-a", km, kill_encode, True)
    add("kill-encode-b", km, kill_encode)
    add("kill-generate-item-a", km, kill_generate("item"), True)
    add("kill-generate-item-b", km, kill_generate("item"))
    add("kill-generate-file-write", km, kill_generate("write"))

    dl = "data-loss"
    add("export-refuses-unrelated-dir", dl, export_unrelated(False), True)
    add("export-force-refuses-unrelated-dir", dl, export_unrelated(True))
    add("export-force-replaces-own-dir", dl, export_force_own, True)
    add("verify-flags-escaping-manifest-path", dl, verify_escape, True)
    add("export-no-write-outside-out", dl, export_escape, True)

    co = "corruption"
    add("resume-truncated-state", co, lambda c: resume_partial(c, truncate_state), True)
    add("resume-bitflipped-state", co, lambda c: resume_partial(c, bitflip_state))
    add("resume-poisoned-state", co, poisoned_state, True)
    add("resume-bitflip-weights-intact-copy", co, lambda c: resume_partial(c, bitflip_weights_in_place, same_step=True),
        True)  # fmt: skip
    add("token-shard-truncated-encode", co, token_shard_encode, True)
    add("token-shard-truncated-train-lm", co, token_shard_train, True)
    add("verify-format-version-string", co, damaged_model(edit_config({"format_version": "2"}), ("format_version",)),
        True)  # fmt: skip
    add("verify-model-type-number", co, damaged_model(edit_config({"model_type": 7}), ("model_type",)))
    add("verify-lists-all-problems", co, damaged_model(
        edit_config({"model_type": None}, manifest=False, flip="model.safetensors"),
        ("model_type", "checksum")))  # fmt: skip
    add("verify-garbage-manifest", co, damaged_model(garbage_manifest, ("manifest",)))
    add("verify-missing-weights", co, damaged_model(missing_weights, ("model.safetensors",)), True)
    add("verify-bitflip-codec", co, damaged_model(bitflip_codec, ("checksum",)))

    bi = "bad-input"
    add("bad-optim-lr-nan", bi, bad_train("optim.lr=nan"), True)
    add("bad-batch-size-0", bi, bad_train("dataset.batch_size=0"), True)
    add("bad-epochs-negative", bi, bad_train("train.epochs=-1"), True)
    add("bad-seed-2to64", bi, bad_train(f"train.seed={BIG}"))
    prepare = ["prepare", "--source", "synthetic", "--out", "d", "--num-tracks", "-1", "--no-progress"]
    add("bad-prepare-num-tracks-negative", bi, bad_cli(prepare), True)
    gen = ["generate", "MODEL", "--prompt", "x", "--out", "out"]
    add("bad-generate-duration-1e12", bi, bad_cli([*gen, "--duration", "1e12"], needs="model", bound=20), True)
    add("bad-generate-duration-10000", bi, bad_cli([*gen, "--duration", "10000"], needs="model", bound=20), True)
    add("bad-generate-seed-2to64", bi, bad_cli([*gen, "--seed", str(BIG)], needs="model", bound=20))
    prompts_line = json.dumps({"prompt": "x", "seed": BIG}) + "\n"
    add("bad-prompts-file-seed-2to64", bi, bad_cli(["generate", "MODEL", "--prompts", "prompts.jsonl", "--out", "out"],
                                                   needs="model", bound=20, prompts=prompts_line))  # fmt: skip
    text_none = ["train", "lm", "tiny", *LM, "model.conditioner.text=none", "--runs-dir", "runs", "--print-config"]
    label = "train lm tiny ... model.conditioner.text=none --print-config"
    add("ok-conditioner-text-none", bi, valid_cli(text_none, '"run_dir"', stage=("data", "codec"), label=label), True)
    add("ok-train-list-presets", bi, valid_cli(["train", "--list-presets"], "tiny"), True)
    add("ok-train-lm-list-presets", bi, valid_cli(["train", "lm", "--list-presets"], "musicgen-small"))
    return out


# --------------------------------------------------------------------------------------------- main


def stable_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


def run_case(case: Case, fx: Fixtures, seed: int) -> Result:
    folder = CASES / case.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ctx = Ctx(case.name, folder, random.Random(stable_seed(seed, case.name)), fx)
    start = time.monotonic()
    try:
        is_clean, reason = case.fn(ctx)
    except Failure as exc:
        is_clean, reason = False, str(exc)
    except Exception as exc:  # a sweep bug or an unexpected layout: still one verdict line
        is_clean, reason = False, f"sweep error: {type(exc).__name__}: {str(exc)[:160]}"
    return Result(case.name, case.group, "CLEAN" if is_clean else "FAILURE", reason, round(time.monotonic() - start, 1))


def select(all_cases: list[Case], quick: bool, only: list[str]) -> list[Case]:
    chosen = [c for c in all_cases if c.quick or not quick]
    if only:
        chosen = [
            c
            for c in chosen
            if any(fnmatch.fnmatch(c.name, p) if any(ch in p for ch in "*?[") else p in c.name for p in only)
        ]
    return chosen


def batches(chosen: list[Case]) -> Iterator[list[Case]]:
    """Lanes (cases that must run one after the other) first, then every other case alone."""
    lanes: dict[str, list[Case]] = {}
    for case in chosen:
        if case.lane:
            lanes.setdefault(case.lane, []).append(case)
    yield from lanes.values()
    for case in chosen:
        if not case.lane:
            yield [case]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~3-minute subset")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run cases whose name matches (glob, or a substring; repeatable)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill points (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--budget", type=float, default=570, help="seconds after which no case starts (570)")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    opts = parser.parse_args(argv)

    chosen = select(cases(), opts.quick, opts.only)
    if opts.list:
        for case in chosen:
            print(f"{case.group:11s} {case.name}{'  (quick)' if case.quick else ''}")
        return 0
    if not chosen:
        print(f"no case matches {opts.only}", file=sys.stderr)
        return 2

    start = time.monotonic()
    recipe = json.dumps([PREPARE_SMALL, PREPARE_BIG, ENCODE_BIG, TRAIN_CODEC, TRAIN_LM, PROMPTS, GENERATE_OPTS, BOOT])
    key = hashlib.sha256((recipe + source_hash() + sys.executable).encode()).hexdigest()[:16]
    CASES.mkdir(parents=True, exist_ok=True)
    fx = Fixtures(FIXTURES, key)
    print(f"sweep: {len(chosen)} cases, seed {opts.seed}, {opts.jobs} at once; fixtures {FIXTURES} (key {key})")
    print(f"python {sys.executable}; every command is `python -m tunesmith --threads 1 ...` on 127.0.0.1 only")

    results: list[Result] = []
    printed = threading.Lock()

    def do(batch: list[Case]) -> None:
        for case in batch:
            if time.monotonic() - start > opts.budget:
                why = f"not run: the {opts.budget:.0f} s budget was spent"
                result = Result(case.name, case.group, "FAILURE", why, 0)
            else:
                result = run_case(case, fx, opts.seed)
            with printed:
                results.append(result)
                print(f"{result.verdict:7s} {result.name:38s} {result.reason} [{result.seconds:.1f} s]", flush=True)

    try:
        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            list(pool.map(do, batches(chosen)))
    finally:
        SERVER.stop()

    order = {c.name: i for i, c in enumerate(chosen)}
    results.sort(key=lambda r: order[r.name])
    wall = time.monotonic() - start
    failures = [r for r in results if r.verdict != "CLEAN"]
    report = {
        "tried": len(results),
        "clean": len(results) - len(failures),
        "failures": len(failures),
        "wall_seconds": round(wall, 1),
        "seed": opts.seed,
        "quick": opts.quick,
        "only": opts.only,
        "jobs": opts.jobs,
        "python": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "fixtures": {"dir": str(FIXTURES), "key": key, "built_seconds": fx.timings, "errors": fx.errors},
        "cases": [asdict(r) for r in results],
    }
    WORK.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wall time {wall:.0f} s; report: {REPORT}")
    if failures:
        print("failures:")
        for r in failures:
            print(f"  {r.name}: {r.reason}")
    print(f"{len(results)} tried, {len(results) - len(failures)} clean, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
