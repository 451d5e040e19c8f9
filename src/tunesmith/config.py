"""Typed configs: dataclasses, YAML presets shipped in the package, dotted overrides.

A task's config is a tree of dataclasses. A *preset* is a YAML file under
``tunesmith/configs/<task>/<name>.yaml`` whose values are laid over the dataclass
defaults. Command-line overrides (``optim.lr=3e-4``) are laid over the preset.
Every layer is validated against the dataclass tree: an unknown key names the
closest valid key, a wrong type names the key, the value and the expected type, and a number
outside its field's range (declared once with :func:`ranged`, or for sections defined elsewhere
in the root class's ``value_ranges``) names the key, the value and the allowed range.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import math
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from tunesmith.team import resolve_roots

log = logging.getLogger("tunesmith.config")

# The crop length of audio tasks, in seconds: one name for every task (codec, lm) and the curriculum.
SEGMENT_SECONDS = "dataset.segment_seconds"


class ConfigError(ValueError):
    """A config key, value or preset the user supplied is wrong; the message says how to fix it."""


# --------------------------------------------------------------------------- value ranges

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SEED_MAX = 2**62  # leaves room for the per-rank and per-item offsets added to a seed


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field (each bound optional); floats must be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        low = f">= {self.ge}" if self.ge is not None else f"> {self.gt}" if self.gt is not None else ""
        high = f"<= {self.le}" if self.le is not None else f"< {self.lt}" if self.lt is not None else ""
        if low and high:
            left = "[" if self.ge is not None else "("
            right = "]" if self.le is not None else ")"
            lo, hi = low.split(" ", 1)[1], high.split(" ", 1)[1]
            return f"in {left}{lo}, {hi}{right}"
        return low or high or "finite"

    def contains(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


def ranged(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field whose value (each item, for a list) must lie in the given range."""
    rng = Range(ge=ge, gt=gt, le=le, lt=lt)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"range": rng})
    return dataclasses.field(default=default, metadata={"range": rng})


def _field_ranges(cls: type) -> dict[str, Range]:
    return {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}


def root_ranges(cls: type) -> dict[str, Range]:
    """Dotted key → Range declared on a root config class (``value_ranges``) for sections it does not define."""
    return {k: v if isinstance(v, Range) else Range(**v) for k, v in (getattr(cls, "value_ranges", None) or {}).items()}


def check_range(key: str, value: Any, rng: Range | None) -> None:
    """Raise :class:`ConfigError` naming the key, the value and the range when ``value`` is outside it.

    Every float must be finite and every int must fit in 64 bits, whether a range is declared or not."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_range(f"{key}[{i}]", item, rng)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    allowed = rng.describe() if rng else "finite"
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value!r}: must be a finite number ({allowed})")
    if rng is not None and not rng.contains(value):
        raise ConfigError(f"{key}={value!r}: must be {allowed}")
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ConfigError(f"{key}={value}: must fit in 64 bits (in [{INT64_MIN}, {INT64_MAX}])")


# --------------------------------------------------------------------------- common sections


@dataclasses.dataclass
class OptimConfig:
    """AdamW with weight-decay groups, warmup then cosine (or constant) LR."""

    lr: float = ranged(3e-4, ge=0)
    betas: list[float] = ranged(default_factory=lambda: [0.9, 0.95], ge=0, lt=1)
    eps: float = ranged(1e-8, ge=0)
    weight_decay: float = ranged(0.1, ge=0)
    warmup_steps: int = ranged(100, ge=0)
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr: float = ranged(0.0, ge=0)
    max_grad_norm: float = ranged(1.0, ge=0)  # 0 disables clipping; the norm is logged either way


@dataclasses.dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = ranged(0.999, ge=0, le=1)
    every: int = ranged(1, ge=1)  # update the average every N optimizer updates
    valid_with_ema: bool = True


@dataclasses.dataclass
class CheckpointConfig:
    every_epochs: int = ranged(1, ge=0)  # numbered checkpoint every N epochs (last is written every epoch)
    keep_last: int = ranged(3, ge=0)  # numbered checkpoints kept; 0 keeps all
    save_best: bool = True


@dataclasses.dataclass
class StabilityConfig:
    max_nan_ratio_per_epoch: float = ranged(0.1, ge=0, le=1)  # abort when more updates than this are non-finite
    max_inf_grad_ratio_per_epoch: float = ranged(0.5, ge=0, le=1)  # warn above this (fp16 scaler skips included)
    adaptive_lr: bool = False  # on a skipped update multiply the LR by lr_backoff
    lr_backoff: float = ranged(0.5, gt=0, le=1)
    min_lr_factor: float = ranged(0.01, ge=0, le=1)


@dataclasses.dataclass
class LogConfig:
    progress: bool = True
    every_steps: int = ranged(10, ge=1)
    tensorboard: bool = True
    wandb: Literal["off", "offline", "online"] = "off"
    wandb_project: str = "tunesmith"


@dataclasses.dataclass
class TrainConfig:
    """Settings of the shared engine loop."""

    epochs: int = ranged(10, ge=0)
    updates_per_epoch: int = ranged(100, ge=1)  # an epoch is this many optimizer updates, as in AudioCraft
    grad_accum: int = ranged(1, ge=1)  # micro-batches per update on each rank
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    seed: int = ranged(0, ge=0, le=SEED_MAX)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False
    fsdp: bool = False
    valid_every: int = ranged(1, ge=0)  # epochs
    valid_max_batches: int = ranged(0, ge=0)  # 0 = the whole valid split, always the same batches
    evaluate_every: int = ranged(0, ge=0)  # epochs; 0 = only at the end
    generate_every: int = ranged(0, ge=0)  # epochs; 0 = only at the end
    best_metric: str = ""  # the "best" checkpoint by this valid or evaluate metric ("" = the task's, e.g. loss)
    best_mode: Literal["auto", "min", "max"] = "auto"  # auto: the metric's known direction (fad: min, clap: max)
    num_workers: int = ranged(0, ge=0)
    max_steps: int = ranged(0, ge=0)  # stop after this many updates in total (0 = epochs decide)
    ema: EmaConfig = dataclasses.field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    stability: StabilityConfig = dataclasses.field(default_factory=StabilityConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)


# Keys that never change the math of a run: they are left out of its signature and a
# difference in them never blocks a resume.
NON_MATH_KEYS: tuple[str, ...] = (
    "train.log",
    "train.num_workers",
    "train.checkpoint.keep_last",
    "train.checkpoint.save_best",
    "train.evaluate_every",
    "train.generate_every",
    "train.best_metric",
    "train.best_mode",
    "train.device",
    "dataset.num_workers",
    "generate",
    "evaluate",  # lm: generation metrics of the evaluate stage
    "task_eval",  # midi: free-running evaluation settings
)


# --------------------------------------------------------------------------- conversions


def to_dict(cfg: Any) -> Any:
    """Dataclass tree → plain containers (dict/list/str/numbers)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (with lenient int→float and str parsing)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        spelled = _literal_spelling(value, choices)
        if spelled is not None:
            return spelled
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}{hint}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = parse_value(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list ({_type_name(tp)})")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping ({_type_name(tp)})")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}={value!r}: expected bool (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected int")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected float")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected float")
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}={value!r}: expected str")
        return "" if value is None else str(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a section (mapping) of {tp.__name__}")
        return value
    return value


def _literal_spelling(value: Any, choices: tuple) -> Any:
    """The choice a parsed command-line value was spelled as (``none`` parses to None, ``1`` to 1...)."""
    if value is None:
        spellings = {"none", "null", "~"}
    elif isinstance(value, bool):
        spellings = {str(value).lower()}
    elif isinstance(value, (int, float)):
        spellings = {str(value)}
    else:
        return None
    matches = [c for c in choices if isinstance(c, str) and c.lower() in spellings]
    return matches[0] if len(matches) == 1 else None


def parse_value(text: str) -> Any:
    """Parse a command-line value: JSON/YAML lists and dicts, numbers (3e-4 too), bools, null."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse {text!r}: {err}") from None
    low = stripped.lower()
    if low in ("null", "none", "~"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(stripped)
        except ValueError:
            pass
    return text


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _fields(cls).items():
        full = f"{prefix}{name}"
        keys.append(full)
        if dataclasses.is_dataclass(tp):
            keys.extend(_all_keys(tp, full + "."))
    return keys


def _unknown_key(cls: type, root: type, key: str) -> ConfigError:
    valid = _all_keys(root)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:1] or difflib.get_close_matches(
            leaf, valid, n=1, cutoff=0.6
        )
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def merge_into(base: dict, update: dict, cls: type, root: type | None = None, prefix: str = "") -> dict:
    """Lay ``update`` over ``base`` (plain dicts of dataclass ``cls``), validating every key and range."""
    root = root or cls
    fields = _fields(cls)
    ranges = _field_ranges(cls)
    extra_ranges = root_ranges(root)
    out = copy.deepcopy(base)
    for name, value in update.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key(cls, root, key)
        tp = fields[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key} is a section; set its keys, e.g. {key}.{next(iter(_fields(tp)))}=...")
            out[name] = merge_into(out.get(name) or {}, value, tp, root, key + ".")
        else:
            out[name] = _coerce(value, tp, key)
            check_range(key, out[name], ranges.get(name) or extra_ranges.get(key))
    return out


def from_dict(cls: type, data: dict, prefix: str = "", *, _ranges: dict[str, Range] | None = None) -> Any:
    """Plain dict → dataclass tree (types assumed validated by :func:`merge_into`; ranges checked here
    too, so a stored config gets the same checks as a preset or an override)."""
    extra_ranges = root_ranges(cls) if _ranges is None else _ranges
    ranges = _field_ranges(cls)
    kwargs = {}
    for name, tp in _fields(cls).items():
        if name not in data:
            continue
        value, key = data[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, key + ".", _ranges=extra_ranges)
        else:
            check_range(key, value, ranges.get(name) or extra_ranges.get(key))
            kwargs[name] = resolve_roots(value)  # //reference/... → the team config's folder (tunesmith.team)
    return cls(**kwargs)


def dotted_to_nested(pairs: dict[str, Any]) -> dict:
    nested: dict = {}
    for key, value in pairs.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is set to a value and used as a section")
        node[parts[-1]] = value
    return nested


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["optim.lr=3e-4", "data=DIR"]`` → ``{"optim.lr": 3e-4, "data": "DIR"}``."""
    out: dict[str, Any] = {}
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"override {arg!r} is not of the form key=value (e.g. optim.lr=3e-4)")
        key, value = arg.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {arg!r} has an empty key")
        out[key] = parse_value(value)
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def diff(a: dict, b: dict) -> dict[str, tuple[Any, Any]]:
    """Keys (dotted) whose values differ between two plain config dicts: key → (a, b)."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


# --------------------------------------------------------------------------- renamed keys
#
# A config class may declare ``renamed_keys: ClassVar[dict[str, str]] = {"old.key": "new.key"}``. The old
# name stays accepted in presets, on the command line and in stored run configs, with a deprecation
# message (logged once per process and key), and run signatures keep hashing the old name, so a run's
# folder does not move when its key is renamed.

_warned: set[str] = set()


def renamed_keys(cls: type) -> dict[str, str]:
    """Old dotted key → new dotted key, as declared by the config class."""
    return dict(getattr(cls, "renamed_keys", None) or {})


def _deprecated(old: str, new: str, where: str) -> None:
    if old not in _warned:
        _warned.add(old)
        log.warning("%s: %s is deprecated, use %s (same meaning)", where, old, new)


def _renamed(key: str, renames: dict[str, str]) -> str | None:
    for old, new in renames.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old) :]
    return None


def rename_dotted(pairs: dict[str, Any], renames: dict[str, str], where: str) -> dict[str, Any]:
    """Dotted overrides with old keys replaced by their new names (both given: an error)."""
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        new = _renamed(key, renames)
        if new is not None:
            if new in pairs:
                raise ConfigError(f"{where}: {key} and {new} are the same setting; keep {new} only")
            _deprecated(key, new, where)
            key = new
        out[key] = value
    return out


def rename_nested(data: dict, renames: dict[str, str], where: str) -> dict:
    """A nested config dict (preset, stored run config) with old keys moved to their new names."""
    if not renames or not any(_renamed(k, renames) for k in flatten(data)):
        return data
    out = copy.deepcopy(data)
    for old, new in renames.items():
        *parents, leaf = old.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *new_parents, new_leaf = new.split(".")
        target = out
        for part in new_parents:
            target = target.setdefault(part, {})
        if new_leaf in target:
            raise ConfigError(f"{where}: {old} and {new} are the same setting; keep {new} only")
        _deprecated(old, new, where)
        target[new_leaf] = value
    return out


def legacy_key(key: str, renames: dict[str, str]) -> str:
    """The name ``key`` had before a rename (itself when never renamed): what run signatures hash."""
    return _renamed(key, {new: old for old, new in renames.items()}) or key


def has_key(cls: type, dotted: str) -> bool:
    """Whether the config dataclass tree ``cls`` has the dotted key."""
    return dotted in _all_keys(cls)


def is_math_key(key: str, extra_non_math: tuple[str, ...] = ()) -> bool:
    return not any(key == prefix or key.startswith(prefix + ".") for prefix in NON_MATH_KEYS + extra_non_math)


# --------------------------------------------------------------------------- presets


def presets_dir(task: str) -> Path:
    return Path(str(resources.files("tunesmith") / "configs" / task))


def list_presets(task: str) -> list[str]:
    folder = presets_dir(task)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def preset_description(task: str, preset: str) -> str:
    """The first comment line of a preset's YAML (its one-line description; "" when it has none)."""
    path = presets_dir(task) / f"{preset}.yaml"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break
    return ""


def load_preset_file(task: str, preset: str, renames: dict[str, str] | None = None) -> dict:
    """Read a preset's YAML (following ``extends: other``), or a path to a YAML file.

    ``renames`` (old → new dotted keys) are applied to each file before it is laid over its parent."""
    path = Path(preset)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = presets_dir(task) / f"{preset}.yaml"
    if not path.is_file():
        names = list_presets(task)
        close = difflib.get_close_matches(preset, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"no preset {preset!r} for task {task!r} (have: {', '.join(names) or 'none'}){hint}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of keys to values")
    parent = data.pop("extends", None)
    if renames:
        data = rename_nested(data, renames, str(path))
    if parent:
        base = load_preset_file(task, parent, renames)
        data = _deep_update(base, data)
    return data


def _deep_update(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


@dataclasses.dataclass
class Resolved:
    """A resolved config: the dataclass, its plain form and the preset's plain defaults."""

    task: str
    preset: str
    config: Any
    data: dict
    defaults: dict
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)  # old key → new key (see renamed_keys)

    def delta(self) -> dict[str, tuple[Any, Any]]:
        """Keys set away from the preset: key → (preset value, resolved value)."""
        return diff(self.defaults, self.data)


def resolve(task: str, cls: type, preset: str, overrides: dict[str, Any] | list[str] | None = None) -> Resolved:
    """Dataclass defaults ← preset YAML ← overrides, each layer validated."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    renames = renamed_keys(cls)
    base = to_dict(cls())
    defaults = merge_into(base, load_preset_file(task, preset, renames), cls)
    overrides = rename_dotted(overrides or {}, renames, "override")
    data = merge_into(defaults, dotted_to_nested(mapping_entries(overrides, defaults, cls)), cls)
    return Resolved(task, preset, from_dict(cls, data), data, defaults, renames)


def mapping_entries(overrides: dict[str, Any], defaults: dict, cls: type) -> dict[str, Any]:
    """Dotted overrides into a mapping field set one entry and keep the others: ``eval_splits.x=...`` →
    ``eval_splits={...preset's entries..., x: ...}``; ``eval_splits={...}`` still replaces the mapping."""
    out = dict(overrides)
    for key, value in overrides.items():
        parts, tp, node = key.split("."), cls, defaults
        for i, part in enumerate(parts[:-1]):
            field_tp = _fields(tp).get(part) if dataclasses.is_dataclass(tp) else None
            if field_tp is None:
                break
            if dataclasses.is_dataclass(field_tp):
                tp, node = field_tp, (node.get(part) if isinstance(node, dict) else None) or {}
                continue
            if get_origin(field_tp) is dict:
                prefix = ".".join(parts[: i + 1])
                current = out.get(prefix)
                if not isinstance(current, dict):
                    current = dict(node.get(part) or {}) if isinstance(node, dict) else {}
                out[prefix] = {**current, ".".join(parts[i + 1 :]): value}
                del out[key]
            break
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
