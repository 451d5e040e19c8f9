"""Reading a transformers model directory without transformers: config.json and (sharded) safetensors.

A directory holds ``model.safetensors``, or ``model.safetensors.index.json`` plus the shards its
``weight_map`` names. Pickled ``pytorch_model.bin`` files are never loaded. A safetensors file's header
(8-byte little-endian length, then JSON ``{name: {dtype, shape, data_offsets}}``) is enough to check
that the file is complete and which tensors it holds, without reading the tensors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tunesmith.errors import UserError
from tunesmith.fileio import UnsafePathError, contained_path

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "added_tokens.json",
)
PREPROCESSOR = "preprocessor_config.json"
GENERATION_CONFIG = "generation_config.json"
MANIFEST = "manifest.json"

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_json_object(path: Path) -> dict:
    """A JSON object from ``path``; UserError naming the file when it is missing or not an object."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); the file is corrupted or truncated") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: must hold a JSON object")
    return data


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The header of a safetensors file (tensor name → {dtype, shape, data_offsets}, plus ``__metadata__``).

    ValueError saying what is wrong when the file is truncated, padded or not safetensors at all.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"only {size} bytes: truncated (not a safetensors file)")
        (length,) = struct.unpack("<Q", raw)
        if length > size - 8 or length > 100_000_000:
            raise ValueError(f"header length {length} exceeds the file ({size} bytes): truncated or not safetensors")
        try:
            header = json.loads(f.read(length))
        except ValueError as err:
            raise ValueError(f"unreadable header ({err}): corrupted") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object: corrupted")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            numel = 1
            for dim in info["shape"]:
                numel *= int(dim)
            expected = numel * _DTYPE_BYTES.get(info["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"header entry {name!r} is malformed: corrupted") from None
        if expected and stop - start != expected:
            raise ValueError(f"tensor {name!r} spans {stop - start} bytes, its shape needs {expected}: corrupted")
        end = max(end, int(stop))
    if size != 8 + length + end:
        state = "truncated" if size < 8 + length + end else "has trailing bytes"
        raise ValueError(f"{size} bytes but the header describes {8 + length + end}: {state}")
    return header


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a transformers directory (one file, or the shards of an index).

    UserError naming what is missing; a directory with only pickled weights is refused with the fix.
    """
    folder = Path(folder)
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if (folder / WEIGHTS_INDEX).is_file():
        index = read_json_object(folder / WEIGHTS_INDEX)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{folder / WEIGHTS_INDEX}: has no 'weight_map'")
        shards = []
        for name in sorted(set(map(str, weight_map.values()))):
            try:
                shards.append(contained_path(folder, name))
            except UnsafePathError as err:
                raise UserError(f"{folder / WEIGHTS_INDEX}: weight_map names {err}; refusing to read it") from None
        return shards
    if any((folder / name).is_file() for name in PICKLED_WEIGHTS):
        raise UserError(
            f"{folder}: holds only pickled weights (pytorch_model.bin), which tunesmith never loads; convert them "
            "once with transformers: `Model.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`"
        )
    raise UserError(f"{folder}: no weights ({WEIGHTS} or {WEIGHTS_INDEX}) found")


def weight_file_problems(folder: Path, files: list[Path]) -> list[str]:
    """One line per file of ``files`` (``folder``'s :func:`weight_files`) that is missing or whose safetensors
    header cannot be read (truncated, not safetensors); [] when every one is complete by its header."""
    problems = []
    for path in files:
        if not path.is_file():
            problems.append(f"{folder}: {path.name} is missing (named by the weight index)")
            continue
        try:
            read_safetensors_header(path)
        except (OSError, ValueError) as err:
            problems.append(f"{folder}: {path.name} {err}")
    return problems


def tensor_names(folder: Path) -> dict[str, tuple[list[int], str]]:
    """Every tensor of a directory's safetensors: name → (shape, dtype), from the headers only."""
    names: dict[str, tuple[list[int], str]] = {}
    for path in weight_files(folder):
        try:
            header = read_safetensors_header(path)
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: {err}") from None
        for name, info in header.items():
            if name != "__metadata__":
                names[name] = (list(info["shape"]), str(info["dtype"]))
    return names


def load_selected(folder: Path, prefixes: tuple[str, ...], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Tensors whose names start with one of ``prefixes`` (full names), read from every shard."""
    from safetensors import safe_open

    out: dict[str, Tensor] = {}
    for path in weight_files(folder):
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if name.startswith(prefixes):
                        out[name] = f.get_tensor(name)
        except (OSError, RuntimeError, ValueError) as err:  # safetensors raises SafetensorError (a RuntimeError)
            raise UserError(f"{path}: cannot be read ({err}); the file is corrupted or truncated") from None
    return out


def load_prefixed(folder: Path, prefix: str, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Tensors whose names start with ``prefix``, the prefix removed."""
    return {name[len(prefix) :]: t for name, t in load_selected(folder, (prefix,), device).items()}


def save_safetensors(path: Path, tensors: dict[str, Tensor]) -> None:
    """A safetensors file that transformers accepts (metadata ``format: pt``); tied tensors are stored as copies."""
    from safetensors.torch import save_file

    from tunesmith.fileio import give_umask_mode

    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if ptr in seen and tensor.numel() else tensor
        seen.add(ptr)
    save_file(out, str(path), {"format": "pt"})
    give_umask_mode(path)  # safetensors writes owner-only (0600) files
