"""What ``generate``, ``serve`` and batch generation accept as MODEL, resolved to a tunesmith folder.

A run folder, checkpoint folder or tunesmith model dir is used as is. A transformers MusicGen directory
(what ``tunesmith export --format hf`` writes, and what people download) is imported on the fly into the
shared import cache, ``<runs>/.hf_imports/<fingerprint>`` — the same cache and importer ``train lm
init_from=hf:DIR`` uses — once per source content; later calls reuse the verified import.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("tunesmith.inference")

HF_MODEL_TYPES = ("musicgen", "musicgen_melody")
IMPORTS_DIR = ".hf_imports"


def import_cache() -> Path:
    """The shared import cache: ``.hf_imports`` in the runs folder (``$TUNESMITH_RUNS``, default ./runs)."""
    from tunesmith.artifacts.runs import default_runs_dir

    return default_runs_dir() / IMPORTS_DIR


def is_hf_musicgen(path: str | Path) -> bool:
    """Whether ``path`` is a transformers MusicGen directory (its config.json's ``model_type``)."""
    from tunesmith.models.codec.loading import model_type

    path = Path(path).expanduser()
    return path.is_dir() and model_type(path) in HF_MODEL_TYPES


def resolve_model_source(model: str | Path, cache: Path | None = None) -> Path:
    """``model`` as a folder tunesmith loads: a transformers MusicGen is imported (see the module doc)."""
    path = Path(model).expanduser()
    if is_hf_musicgen(path):
        from tunesmith.models.hf.finetune import cached_import

        return cached_import(path, cache if cache is not None else import_cache())
    return path
