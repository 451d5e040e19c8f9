"""The folder map is the architecture: a room imports only rooms below it (read with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tunesmith"

# Lowest first. A module may import its own room and any room earlier in this list, never a later one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "__init__", "configs", "review_assets"),
    ("config", "runtime", "fileio", "environment", "team"),
    ("audio",),
    ("artifacts",),
    ("models",),
    ("data",),
    ("eval",),
    ("engine",),
    ("tasks",),
    ("inference",),
    ("review",),
    ("serve",),
    ("launch",),
    ("commands",),
    ("cli", "__main__", "demo"),
)
RANK = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}


def room_of(module: str) -> str:
    """``tunesmith.models.lm.model`` → ``models``; ``tunesmith`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every tunesmith import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "tunesmith":  # `from tunesmith import x`: x is a room (or a name in __init__)
                found += [(node.lineno, f"tunesmith.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, m) for line, m in found if m == "tunesmith" or m.startswith("tunesmith.")]


def climbing_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(module_name(path))
        for line, target in imported_modules(path):
            room = room_of(target)
            if room not in RANK:  # a name defined in tunesmith/__init__.py (e.g. __version__)
                room = "__init__"
            if RANK[room] > RANK[source]:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source} imports {target} ({room})")
    return problems


def test_every_room_is_placed() -> None:
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    unplaced = sorted(r for r in rooms if r not in RANK)
    assert not unplaced, f"rooms missing from LAYERS (place each at its level): {unplaced}"


def test_imports_point_down() -> None:
    problems = climbing_imports()
    assert not problems, "imports that climb:\n" + "\n".join(problems)


def test_only_the_entry_point_imports_commands() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(module_name(path))
        if source in ("commands", "cli", "__main__"):
            continue
        bad += [f"{path.name}:{line}: {m}" for line, m in imported_modules(path) if room_of(m) == "commands"]
    assert not bad, bad


@pytest.mark.parametrize(
    ("source", "target", "climbs"),
    [
        ("models", "engine", True),
        ("artifacts", "models", True),
        ("commands", "serve", False),
        ("data", "models", False),
    ],
)
def test_the_rule_itself(source: str, target: str, climbs: bool) -> None:
    assert (RANK[target] > RANK[source]) is climbs


def test_tests_share_through_conftest_and_support_only() -> None:
    """A test module never imports another test module (fixtures: conftest.py; helpers: tests/support/)."""
    tests = Path(__file__).resolve().parent
    bad = []
    for path in sorted(tests.rglob("test_*.py")):
        if "fixtures" in path.relative_to(tests).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [
                f"{path.relative_to(tests)}:{node.lineno}: {n}" for n in names if n.split(".")[0].startswith("test_")
            ]
    assert not bad, bad
