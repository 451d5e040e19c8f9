"""A run's checkpoints and the sample folder each gets: listing (numbered, ``best``, ``last``) and
selecting them, the ``RUN/samples/review/<checkpoint>/`` folders stamped with the weights they were made
with (``source.json``), and sharing files between checkpoints whose weights are identical.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.review")

REVIEW_DIR = "review"  # RUN/samples/review/<checkpoint>/
SOURCE_FILE = "source.json"


@dataclasses.dataclass
class CheckpointRef:
    """A checkpoint of a run: ``name`` (epoch_NNNN, best, last), its folder, epoch/step and weights hash."""

    name: str
    folder: Path
    epoch: int | None
    step: int | None
    weights_sha256: str

    @property
    def label(self) -> str:
        if self.name.startswith("epoch_") and self.epoch is not None:
            return f"epoch {self.epoch}"
        return f"{self.name} · epoch {self.epoch}" if self.epoch is not None else self.name


_NUMBERED = re.compile(r"^epoch_(\d+)$")


def _checkpoint_ref(folder: Path) -> CheckpointRef | None:
    from tunesmith.artifacts.checkpoint import MANIFEST, sha256_file

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("skipping %s: unreadable %s", folder, MANIFEST)
        return None
    weights = files.get("model_ema.safetensors") or files.get("model.safetensors") or {}
    sha = weights.get("sha256") if isinstance(weights, dict) else None
    epoch, step = manifest.get("epoch"), manifest.get("step")
    match = _NUMBERED.match(folder.name)
    if epoch is None and match:
        epoch = int(match.group(1))
    return CheckpointRef(
        folder.name,
        folder,
        int(epoch) if isinstance(epoch, (int, float)) else None,
        int(step) if isinstance(step, (int, float)) else None,
        str(sha or sha256_file(folder / MANIFEST)),
    )


def list_checkpoints(run_dir: Path) -> list[CheckpointRef]:
    """A run's checkpoints: numbered ones by epoch, then ``best``, then ``last`` (others after the numbered)."""
    from tunesmith.artifacts.checkpoint import MANIFEST

    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    refs = []
    for path in folder.iterdir():
        hidden = path.name.startswith(".") or path.name.endswith(".prev")
        if path.is_dir() and not hidden and (path / MANIFEST).is_file():
            ref = _checkpoint_ref(path)
            if ref is not None:
                refs.append(ref)

    def order(ref: CheckpointRef) -> tuple:
        if _NUMBERED.match(ref.name):
            return (0, ref.epoch or 0, ref.name)
        return ({"best": 2, "last": 3}.get(ref.name, 1), 0, ref.name)

    return sorted(refs, key=order)


SAMPLE_SUFFIXES = (".wav", ".mid")  # audio samples; a MIDI run's generated notes (and their .wav rendering)


def count_samples(folder: Path) -> int:
    """Samples in a checkpoint's review folder: distinct file stems among ``SAMPLE_SUFFIXES`` (a MIDI sample
    rendered to audio, ``x.mid`` + ``x.wav``, is one sample); hidden files (writes in progress) are not."""
    names = (p for p in folder.iterdir() if p.suffix in SAMPLE_SUFFIXES and not p.name.startswith("."))
    return len({p.stem for p in names if p.is_file()})


def checkpoint_samples(run_dir: Path) -> list[dict]:
    """Each checkpoint of a run with its review samples: ``{name, epoch, step, samples}`` (stale ones count 0)."""
    rows = []
    for ref in list_checkpoints(run_dir):
        folder = run_dir / "samples" / REVIEW_DIR / ref.name
        samples = count_samples(folder) if folder.is_dir() and not weights_changed(folder, ref) else 0
        rows.append({"name": ref.name, "epoch": ref.epoch, "step": ref.step, "samples": samples})
    return rows


def select_checkpoints(refs: list[CheckpointRef], spec: str) -> list[CheckpointRef]:
    """``spec``: ``all`` or a comma list of epoch numbers and/or ``best``/``last`` (e.g. ``2,5,best``)."""
    if spec.strip().lower() == "all":
        return list(refs)
    available = ", ".join(r.name for r in refs) or "none"
    chosen: list[CheckpointRef] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token.isdigit():
            matches = [r for r in refs if _NUMBERED.match(r.name) and r.epoch == int(token)]
        else:
            matches = [r for r in refs if r.name == token]
        if not matches:
            raise UserError(
                f"--epochs {spec}: no checkpoint {token!r} in this run (available: {available}); "
                "numbered checkpoints are kept per train.checkpoint.keep_last; "
                "see `tunesmith review RUN --list-epochs`"
            )
        chosen.extend(m for m in matches if m not in chosen)
    if not chosen:
        raise UserError(f"--epochs {spec!r}: give 'all' or a comma list such as 2,5,best")
    return chosen


def weights_changed(folder: Path, ref: CheckpointRef) -> bool:
    try:
        recorded = json.loads((folder / SOURCE_FILE).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return True
    return recorded != ref.weights_sha256


def prepare_output(folder: Path, ref: CheckpointRef) -> None:
    """Make ``folder`` hold samples of ``ref``'s current weights: stale files (other weights) are removed first."""
    from tunesmith.fileio import atomic_write_text

    if folder.is_dir() and not weights_changed(folder, ref):
        return
    if folder.is_dir():
        log.info("%s: the checkpoint's weights changed since its samples were made; making them again", ref.name)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = {"checkpoint": ref.name, "epoch": ref.epoch, "step": ref.step, "weights_sha256": ref.weights_sha256}
    atomic_write_text(folder / SOURCE_FILE, json.dumps(source, indent=2) + "\n")


def twin_file(base: Path, ref: CheckpointRef, refs: list[CheckpointRef], name: str) -> Path | None:
    """The same file made by another checkpoint with identical weights, if any."""
    for other in refs:
        if other.name == ref.name or other.weights_sha256 != ref.weights_sha256:
            continue
        candidate = base / other.name / name
        if candidate.is_file() and not weights_changed(base / other.name, other):
            return candidate
    return None


@dataclasses.dataclass
class ReviewStats:
    generated: int = 0  # samples made now
    reused: int = 0  # linked from a checkpoint with identical weights
    existing: int = 0  # already there
    skipped_checkpoints: list[str] = dataclasses.field(default_factory=list)  # unusable (reported)
