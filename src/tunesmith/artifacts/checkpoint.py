"""Checkpoints: atomic folders of safetensors weights + a plain-data training state + checksums.

A checkpoint is a folder::

    model.safetensors        the model's weights (shared tensors stored once)
    model_ema.safetensors    bias-corrected EMA weights, when EMA is on
    <name>.safetensors       extra modules (e.g. a codec's discriminator)
    state.pt                 optimizers, scalers, EMA, step, epoch, RNG per rank, history…
                             plain containers only: loads with torch.load(weights_only=True)
    config.json              the resolved run config and meta (task, preset, signature)
    manifest.json            sha256 and size of every file above

It is written to a temporary folder (every file fsynced) and renamed into place; an
existing folder of the same name is first renamed to ``<name>.prev`` and removed only
once the new one is complete, so a kill at any moment leaves one complete checkpoint.
:func:`copy_checkpoint` makes ``epoch_NNNN``/``best`` from ``last``: the first one of an epoch as an
independent, verified copy, so one damaged file never reaches every copy of the newest state.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tunesmith.errors import UserError
from tunesmith.fileio import (  # live in tunesmith.fileio
    UnsafePathError,
    atomic_write_json,
    contained_path,
    give_umask_mode,
    link_or_copy,
    sha256_file,
    swap_folder,
)
from tunesmith.fileio import atomic_write_bytes as atomic_write_bytes  # re-exported: the file helpers
from tunesmith.fileio import replace_folder as replace_folder

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STATE = "state.pt"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model_ema.safetensors"


class CheckpointError(UserError):
    """A checkpoint is missing, truncated or corrupted; the message says which file and why."""


# --------------------------------------------------------------------------- files


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file; tensors sharing storage (tied weights) are stored once with an alias map."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor.cpu().contiguous()
    meta = dict(metadata or {})
    if aliases:
        meta["tunesmith.aliases"] = json.dumps(aliases)
    save_file(unique, str(path), metadata=meta)
    give_umask_mode(path)  # safetensors writes owner-only (0600) files


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            out[name] = f.get_tensor(name)
        meta = f.metadata() or {}
    for alias, target in json.loads(meta.get("tunesmith.aliases", "{}")).items():
        out[alias] = out[target]
    return out


def write_manifest(folder: Path, extra: dict | None = None) -> dict:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != MANIFEST and not path.name.startswith("."):
            files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": 1, "files": files, **(extra or {})}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def verify_folder(folder: Path, required: tuple[str, ...] = ()) -> list[str]:
    """Problems with a folder written with a manifest: missing, truncated or altered files, and listed
    paths that would lead outside the folder (absolute, ``..``, a symbolic link out)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return [f"{folder}: {MANIFEST} is missing (incomplete or not a tunesmith folder)"]
    return manifest_problems(folder, required)


def manifest_problems(folder: Path, required: tuple[str, ...] = ()) -> list[str]:
    """Every file ``folder/manifest.json`` lists that is missing, truncated, altered (sha256) or would lead
    outside ``folder``, plus ``required`` names it does not list; the one check behind every verify."""
    manifest_path = Path(folder) / MANIFEST
    try:
        files = json.loads(manifest_path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{manifest_path}: unreadable ({err}); the manifest is corrupted"]
    problems = [f"{folder}: {name} is not listed in {MANIFEST}" for name in required if name not in files]
    for name, meta in files.items():
        try:
            path = contained_path(folder, name)
        except UnsafePathError as err:
            problems.append(f"{manifest_path}: lists {err}; a manifest may only name files inside its folder")
            continue
        meta = meta if isinstance(meta, dict) else {}
        if not path.is_file():
            problems.append(f"{folder}: {name} is missing (listed in {MANIFEST})")
        elif path.stat().st_size != meta.get("bytes"):
            problems.append(
                f"{folder}: {name} is truncated or altered ({path.stat().st_size} bytes, {MANIFEST} says "
                f"{meta.get('bytes')})"
            )
        elif sha256_file(path) != meta.get("sha256"):
            problems.append(
                f"{folder}: {name} checksum mismatch (sha256 differs from {MANIFEST}): the file is corrupted"
            )
    return problems


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    folder: Path,
    *,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict,
    config: dict,
) -> Path:
    """Atomically write checkpoint ``folder``. ``weights`` maps file stem → state dict."""
    folder = Path(folder)
    with swap_folder(folder) as tmp:
        for stem, tensors in weights.items():
            save_tensors(tmp / f"{stem}.safetensors", tensors)
        torch.save(state, tmp / STATE)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        write_manifest(tmp, {"step": state.get("step"), "epoch": state.get("epoch")})
    return folder


def copy_checkpoint(src: Path, dst: Path, *, link: bool) -> Path:
    """Atomically make checkpoint ``dst`` from ``src``: hard links (``link=True``, no extra disk; a damaged
    file is then damaged in both) or an independent copy, verified against the manifest before it appears."""
    src, dst = Path(src), Path(dst)
    copy = link_or_copy if link else shutil.copy2
    with swap_folder(dst) as tmp:
        for path in src.iterdir():
            if path.is_dir():
                shutil.copytree(path, tmp / path.name, copy_function=copy)
            elif path.is_file():
                copy(path, tmp / path.name)
        if not link:
            problems = verify_folder(tmp, required=(STATE,) if (src / STATE).is_file() else ())
            if problems:
                raise CheckpointError(f"copying {src} to {dst}: " + "; ".join(problems))
    return dst


def load_state(folder: Path, map_location: str | torch.device = "cpu") -> dict:
    """``state.pt`` loaded with ``weights_only=True``; CheckpointError (never torch's advice) when it holds
    anything but plain data, or cannot be read."""
    path = Path(folder) / STATE
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: not a tunesmith training state (it asks to build Python objects, which a tunesmith "
            "state never holds); it will not be loaded"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(
            f"{path}: unreadable training state ({type(err).__name__}); it will not be loaded"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a tunesmith training state (not a dict); it will not be loaded")
    return state


def read_config(folder: Path) -> dict:
    """The config stored with a checkpoint or model directory (config.json)."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{folder}: {CONFIG} is missing")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None


def load_weights(
    folder: Path, name: str = "model", ema: bool | None = None, device: str | torch.device = "cpu", verify: bool = True
) -> dict[str, torch.Tensor]:
    """Weights ``<name>.safetensors`` of a checkpoint; ``ema=None`` prefers EMA weights when present."""
    folder = Path(folder)
    if verify:
        problems = verify_folder(folder)
        if problems:
            raise CheckpointError("; ".join(problems))
    path = folder / f"{name}.safetensors"
    ema_path = folder / f"{name}_ema.safetensors"
    if (ema is None or ema) and ema_path.is_file():
        path = ema_path
    elif ema:
        raise CheckpointError(f"{folder}: no EMA weights ({ema_path.name}); train with train.ema.enabled=true")
    if not path.is_file():
        raise CheckpointError(f"{folder}: {path.name} is missing")
    return load_tensors(path, device)


def _is_checkpoint(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() and ((folder / STATE).is_file() or (folder / WEIGHTS).is_file())


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """A run's checkpoints, newest first (by step in their manifest): last, last.prev, numbered, best."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = []
    for path in ckpt_dir.iterdir():
        if path.is_dir() and not path.name.startswith(".") and (path / MANIFEST).is_file():
            try:
                step = int(json.loads((path / MANIFEST).read_text()).get("step") or 0)
            except (ValueError, TypeError):
                step = -1
            rank = {"last": 3, "last.prev": 2, "best": 0}.get(path.name, 1)
            found.append((step, rank, path))
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [p for _, _, p in found]


def latest_good_checkpoint(run_dir: Path) -> Path | None:
    """Newest checkpoint whose files match their checksums; corrupt ones are reported and skipped."""
    for folder in checkpoint_candidates(run_dir):
        problems = verify_folder(folder, required=(STATE,))
        if not problems:
            return folder
        log.warning("checkpoint %s is unusable (%s); trying the previous one", folder, "; ".join(problems))
    return None


def latest_loadable_state(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """(folder, state) of the newest checkpoint that verifies and whose ``state.pt`` loads as plain data;
    each one skipped is reported with the reason (torch's own message is never shown)."""
    for folder in checkpoint_candidates(run_dir):
        problems = verify_folder(folder, required=(STATE,))
        if not problems:
            try:
                return folder, load_state(folder, map_location)
            except CheckpointError as err:
                problems = [str(err)]
        log.warning("checkpoint %s is unusable (%s); trying the previous one", folder, "; ".join(problems))
    return None


def find_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A checkpoint or model folder from a run folder, checkpoint folder or exported model dir."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run, checkpoint or model directory")
    if _is_checkpoint(path) or (path / CONFIG).is_file() and (path / MANIFEST).is_file():
        return path
    ckpts = path / "checkpoints"
    if ckpts.is_dir():
        order = [which, "last"] if which != "last" else ["last"]
        for name in order:
            folder = ckpts / name
            if folder.is_dir() and not verify_folder(folder):
                return folder
            if folder.is_dir():
                log.warning("checkpoint %s is corrupted; looking for another", folder)
        good = latest_good_checkpoint(path)
        if good is not None:
            return good
        raise CheckpointError(f"{path}: the run has no usable checkpoint yet")
    raise UserError(
        f"{path}: not a run folder (no checkpoints/), checkpoint or model directory (no {CONFIG} + {MANIFEST})"
    )


def prune_numbered(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` numbered checkpoints (``epoch_*``); returns the removed."""
    if keep_last <= 0:
        return []
    ckpt_dir = Path(run_dir) / "checkpoints"
    numbered = sorted(p for p in ckpt_dir.glob("epoch_*") if p.is_dir())
    removed = numbered[:-keep_last] if len(numbered) > keep_last else []
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed
