"""The one source of generation defaults: the run's stored sampling settings, else the model family's.

``generate``, batch generation, ``review`` and ``serve`` all start from :func:`generation_defaults`,
so the same prompt and seed give the same audio whichever command made it. A run config's ``generate``
section (what ``train lm`` stored; exported model dirs carry it) wins key by key; a model without one
(an imported MusicGen) gets its family's settings, which are the request schema's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunesmith.inference.request import DEFAULTS

SAMPLING = ("duration", "cfg", "temperature", "top_k", "top_p", "seed")
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {"lm": {k: DEFAULTS[k] for k in SAMPLING}}  # MusicGen's settings
_TYPES = {"duration": float, "cfg": float, "temperature": float, "top_k": int, "top_p": float, "seed": int}


def generation_defaults(run_config: Mapping[str, Any] | None, family: str = "lm") -> tuple[dict[str, Any], str]:
    """(settings, where they came from): the ``generate`` section of ``run_config`` over the family's.

    ``settings`` has :data:`SAMPLING`'s keys; the source reads ``"the run's generate settings"`` when
    the run gave at least one of them, else ``"the <family> family's defaults"``.
    """
    section = (run_config or {}).get("generate")
    stored = section if isinstance(section, Mapping) else {}
    settings = dict(FAMILY_DEFAULTS[family])
    used = False
    for key in SAMPLING:
        value = stored.get(key)
        if value is None or isinstance(value, bool) or (key == "duration" and not value):
            continue
        try:
            settings[key] = _TYPES[key](value)
            used = True
        except (TypeError, ValueError):
            continue  # a damaged value: the family's
    return settings, ("the run's generate settings" if used else f"the {family} family's defaults")


def describe(settings: Mapping[str, Any]) -> str:
    """One line for logs: ``duration=4 s cfg=3 temperature=1 top_k=50 top_p=0 seed=0``."""
    parts = []
    for key in SAMPLING:
        if key in settings and settings[key] is not None:
            value = settings[key]
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            parts.append(f"{key}={shown}{' s' if key == 'duration' else ''}")
    return " ".join(parts)


def model_generation_defaults(model: str | Path, which: str = "best") -> tuple[dict[str, Any], str]:
    """:func:`generation_defaults` of a run folder, checkpoint folder or model dir (reads config.json only)."""
    from tunesmith.artifacts import checkpoint as ckpt

    raw = ckpt.read_config(ckpt.find_checkpoint(model, which=which))
    run_config = raw.get("config", raw) if isinstance(raw, dict) else {}
    return generation_defaults(run_config if isinstance(run_config, Mapping) else {})
