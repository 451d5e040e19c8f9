"""Team / cluster config: the runs folder, named root folders (``//reference/...``) and Slurm defaults.

One YAML file is active: ``$TUNESMITH_CONFIG`` when set (it must exist), else the user's default
``~/.config/tunesmith/config.yaml`` (``$XDG_CONFIG_HOME`` respected) when it exists, else none::

    runs_dir: /shared/tunesmith/runs
    reference: /shared/tunesmith/reference      # //reference/... in any path
    datasets: {fma: /datasets/fma}              # //fma/... too
    slurm: {partition: gpu, time_min: 240, gpus_per_node: 8, cpus_per_task: 10}
    clusters:                                   # each overrides the keys above on its machines
      big:
        hosts: ["login-*.big.example.org", "node-*"]
        reference: /big/shared/reference
        slurm: {partition: learnlab, account: music, qos: normal}

The cluster is ``$TUNESMITH_CLUSTER`` when set, else the first whose ``hosts`` pattern (fnmatch)
matches this host name, else none (the top-level values alone). A path ``//NAME/rest`` names the
folder ``NAME`` (``reference`` or a ``datasets`` key) of the active config; an unknown name, a root
that is not configured and a root folder that cannot be reached are each a :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import os
import re
import socket
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import UserError

CONFIG_ENV = "TUNESMITH_CONFIG"
CLUSTER_ENV = "TUNESMITH_CLUSTER"
ROOT_PATTERN = re.compile(r"^//([A-Za-z0-9_.-]+)(?:/(.*))?$")

SLURM_KEYS: dict[str, type] = {
    "partition": str,
    "account": str,
    "qos": str,
    "constraint": str,
    "time_min": int,  # wall-clock limit per job, minutes
    "nodes": int,
    "gpus_per_node": int,
    "tasks_per_node": int,  # default: gpus_per_node, or 1 without GPUs
    "cpus_per_task": int,
    "mem_gb": float,
    "signal_delay_s": int,  # USR2 this long before the time limit: checkpoint and requeue
    "max_requeues": int,  # timeouts/preemptions a job may be requeued after
    "setup": list,  # shell lines run before the job (module load ..., source venv/bin/activate)
    "additional": dict,  # any other sbatch option: {"mail-type": "END"}
}
SECTION_KEYS = ("runs_dir", "reference", "datasets", "slurm")
TOP_KEYS = (*SECTION_KEYS, "clusters")
CLUSTER_KEYS = (*SECTION_KEYS, "hosts")


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tunesmith" / "config.yaml"


@dataclasses.dataclass
class TeamConfig:
    """The active config: where it came from, the chosen cluster and its merged values."""

    source: Path | None = None  # the YAML file read (None: no config file)
    cluster: str | None = None
    cluster_reason: str = "no clusters configured"
    clusters: tuple[str, ...] = ()
    runs_dir: str | None = None
    reference: str | None = None
    datasets: dict[str, str] = dataclasses.field(default_factory=dict)
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def roots(self) -> dict[str, str | None]:
        """Name → folder of every ``//NAME/`` root (``reference`` first, None when not configured)."""
        return {"reference": self.reference, **self.datasets}

    def describe_source(self) -> str:
        where = str(self.source) if self.source else "no config file"
        return where + (f", cluster {self.cluster}" if self.cluster else "")


# --------------------------------------------------------------------------- YAML with line numbers


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[tuple, int]]:
    """(data, lines): ``lines`` maps the key path of every mapping entry (a tuple of keys and list
    indices) to its 1-based line in the file, so a message can point at the line to fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    lines: dict[tuple, int] = {}
    if node is None:
        return {}, lines
    _index_lines(node, (), lines)
    return yaml.safe_load(text), lines


def _index_lines(node: yaml.Node, where: tuple, lines: dict[tuple, int]) -> None:
    lines.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*where, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*where, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*where, i), lines)


def closest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """ "; did you mean 'x'?" for the nearest of ``choices`` ("" when none is near)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def line_of(lines: dict[tuple, int], where: tuple) -> int | None:
    """The line of ``where`` or of its nearest enclosing entry."""
    while where:
        if where in lines:
            return lines[where]
        where = where[:-1]
    return lines.get(())


# --------------------------------------------------------------------------- reading the config


def config_path(environ: dict[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV]).expanduser()
        if not path.is_file():
            raise UserError(f"${CONFIG_ENV}={env[CONFIG_ENV]}: no such file (unset it or point it at a config YAML)")
        return path
    path = user_config_path()
    return path if path.is_file() else None


def load_team_config(
    path: Path | None = None, *, environ: dict[str, str] | None = None, hostname: str | None = None
) -> TeamConfig:
    """Read and check the active config file (``path`` overrides the lookup) and pick the cluster."""
    env = os.environ if environ is None else environ
    path = path if path is not None else config_path(env)
    if path is None:
        return TeamConfig()
    path = Path(path).absolute()
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a tunesmith config is a mapping (runs_dir, reference, datasets, slurm, clusters)")
    _check_section(path, lines, data, (), TOP_KEYS)
    clusters = data.get("clusters") or {}
    if not isinstance(clusters, dict):
        raise UserError(f"{path} line {line_of(lines, ('clusters',))}: clusters is a mapping of name → settings")
    for name, section in clusters.items():
        if not isinstance(section, dict):
            raise UserError(f"{path} line {line_of(lines, ('clusters', name))}: cluster {name!r} must be a mapping")
        _check_section(path, lines, section, ("clusters", name), CLUSTER_KEYS)
    name, reason = _pick_cluster(path, clusters, env, hostname or socket.gethostname())
    merged = {k: data.get(k) for k in SECTION_KEYS}
    if name is not None:
        chosen = clusters[name]
        for key in SECTION_KEYS:
            if key in chosen and key in ("datasets", "slurm"):
                merged[key] = {**(merged[key] or {}), **(chosen[key] or {})}
            elif key in chosen:
                merged[key] = chosen[key]
    return TeamConfig(
        source=path,
        cluster=name,
        cluster_reason=reason,
        clusters=tuple(clusters),
        runs_dir=_path_value(merged["runs_dir"], path),
        reference=_path_value(merged["reference"], path),
        datasets={str(k): _path_value(v, path) or "" for k, v in (merged["datasets"] or {}).items()},
        slurm=dict(merged["slurm"] or {}),
    )


def _path_value(value: Any, source: Path) -> str | None:
    """A folder from the config: ``~`` expanded, relative paths taken from the config file's folder."""
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (source.parent / path))


def _check_section(path: Path, lines: dict[tuple, int], section: dict, where: tuple, allowed: tuple) -> None:
    for key, value in section.items():
        if key not in allowed:
            raise UserError(
                f"{path} line {line_of(lines, (*where, key))}: unknown key {key!r}{closest(str(key), allowed)} "
                f"(allowed: {', '.join(allowed)})"
            )
        if key == "datasets" and value is not None and not isinstance(value, dict):
            raise UserError(f"{path} line {line_of(lines, (*where, key))}: datasets is a mapping of name → folder")
        if key == "slurm" and value is not None:
            if not isinstance(value, dict):
                raise UserError(f"{path} line {line_of(lines, (*where, key))}: slurm is a mapping of settings")
            for skey, svalue in value.items():
                line = line_of(lines, (*where, key, skey))
                if skey not in SLURM_KEYS:
                    raise UserError(
                        f"{path} line {line}: unknown slurm key {skey!r}{closest(str(skey), tuple(SLURM_KEYS))} "
                        f"(allowed: {', '.join(SLURM_KEYS)})"
                    )
                want = SLURM_KEYS[skey]
                ok = isinstance(svalue, want) or (want is float and isinstance(svalue, int))
                if svalue is not None and (not ok or isinstance(svalue, bool)):
                    raise UserError(f"{path} line {line}: slurm.{skey}={svalue!r}: expected {want.__name__}")
        if key == "hosts" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UserError(f"{path} line {line_of(lines, (*where, key))}: hosts is a list of host-name patterns")


def _pick_cluster(path: Path, clusters: dict, env, hostname: str) -> tuple[str | None, str]:
    wanted = env.get(CLUSTER_ENV)
    if wanted:
        if wanted not in clusters:
            names = ", ".join(clusters) or "none"
            raise UserError(
                f"${CLUSTER_ENV}={wanted}: no such cluster in {path} (have: {names}){closest(wanted, tuple(clusters))}"
            )
        return wanted, f"${CLUSTER_ENV}={wanted}"
    for name, section in clusters.items():
        for pattern in section.get("hosts") or ():
            if fnmatch.fnmatch(hostname, pattern):
                return name, f"host name {hostname!r} matches {pattern!r}"
    if clusters:
        return None, f"host name {hostname!r} matches no cluster's hosts and ${CLUSTER_ENV} is unset"
    return None, "no clusters configured"


@functools.lru_cache(maxsize=8)
def _cached(config_file: str, cluster: str, mtime: float) -> TeamConfig:
    return load_team_config(Path(config_file) if config_file else None)


def active_config() -> TeamConfig:
    """The active config (cached per file, modification time and ``$TUNESMITH_CLUSTER``)."""
    path = config_path()
    if path is None:
        return TeamConfig()
    return _cached(str(path), os.environ.get(CLUSTER_ENV, ""), path.stat().st_mtime)


def configured_runs_dir() -> str | None:
    """The config's runs folder (``//NAME/`` resolved), None without a config file or that key."""
    path = config_path()
    if path is None:
        return None
    value = active_config().runs_dir
    return resolve_root(value) if value else None


# --------------------------------------------------------------------------- //NAME/ paths


def is_root_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike)) and ROOT_PATTERN.match(os.fspath(value)) is not None


def resolve_root(value: str, config: TeamConfig | None = None) -> str:
    """``//reference/ckpt/x`` → ``<reference folder>/ckpt/x``; other strings unchanged.

    Raises UserError naming the config file for an unknown root name, a root that is not configured
    and a root folder that does not exist or cannot be read."""
    match = ROOT_PATTERN.match(value)
    if match is None:
        return value
    name, rest = match.group(1), match.group(2) or ""
    config = config if config is not None else active_config()
    roots = config.roots
    where = config.describe_source()
    if name not in roots:
        raise UserError(
            f"{value}: unknown root //{name}/ (known: {', '.join('//' + r + '/' for r in roots)}; "
            f"config: {where}){closest(name, tuple(roots))}"
        )
    folder = roots[name]
    if not folder:
        how = f"set `{name}:` in ${CONFIG_ENV} or {user_config_path()}" if name == "reference" else "configure it"
        raise UserError(f"{value}: no //{name}/ folder is configured ({where}); {how}")
    root = Path(folder)
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        raise UserError(
            f"{value}: the //{name}/ folder {root} (from {where}) does not exist or cannot be read "
            "(is the shared file system mounted on this machine?)"
        )
    return str(root / rest) if rest else str(root)


def resolve_roots(value: Any) -> Any:
    """:func:`resolve_root` on a string or on each string of a list; anything else unchanged."""
    if isinstance(value, str):
        return resolve_root(value)
    if isinstance(value, list):
        return [resolve_root(v) if isinstance(v, str) else v for v in value]
    return value


def resolve_cli_paths(namespace: Any) -> None:
    """Resolve ``//NAME/...`` in the path-valued (``pathlib.Path``) attributes of parsed CLI arguments, in place."""
    for key, value in vars(namespace).items():
        if isinstance(value, Path) and is_root_path(value):
            setattr(namespace, key, Path(resolve_root(str(value))))
        elif isinstance(value, str) and value.startswith("//reference"):  # a run or file given as plain text
            setattr(namespace, key, resolve_root(value))
        elif isinstance(value, list) and any(isinstance(v, Path) and is_root_path(v) for v in value):
            setattr(namespace, key, [Path(resolve_root(str(v))) if isinstance(v, Path) else v for v in value])


def report() -> dict[str, Any]:
    """The active config for `tunesmith doctor`: file, cluster and why, and where each folder points."""
    try:
        config = active_config()
    except UserError as err:
        return {"error": str(err)}

    def where(path: str | None) -> dict[str, Any]:
        return {"path": path, "exists": bool(path) and Path(path).is_dir()}

    return {
        "file": str(config.source) if config.source else None,
        "looked_for": os.environ.get(CONFIG_ENV) or str(user_config_path()),
        "cluster": config.cluster,
        "cluster_reason": config.cluster_reason,
        "runs_dir": where(os.environ.get("TUNESMITH_RUNS") or config.runs_dir or "runs"),
        "roots": {f"//{name}/": where(path) for name, path in config.roots.items()},
        "slurm": config.slurm,
    }


def report_lines(info: dict[str, Any]) -> list[str]:
    """:func:`report` as the lines doctor prints."""
    if "error" in info:
        return [f"config       ERROR: {info['error']}"]
    if not info["file"]:
        return [f"config       none (looked for {info['looked_for']}; set ${CONFIG_ENV}=FILE for a team config)"]
    lines = [f"config       {info['file']}"]
    lines.append(f"cluster      {info['cluster'] or 'none'} ({info['cluster_reason']})")

    def mark(entry: dict) -> str:
        if not entry["path"]:
            return "not configured"
        return f"{entry['path']}" + ("" if entry["exists"] else "  (MISSING: not found or not mounted)")

    lines.append(f"runs_dir     {mark(info['runs_dir'])}")
    lines += [f"{name:<12} {mark(entry)}" for name, entry in info["roots"].items()]
    if info["slurm"]:
        lines.append("slurm        " + ", ".join(f"{k}={v}" for k, v in info["slurm"].items()))
    return lines
