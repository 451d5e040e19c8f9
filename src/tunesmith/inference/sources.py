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


def cached_import(source: Path, cache: Path) -> Path:
    """``cache/<fingerprint[:16]>``: the import of ``source``, made now unless an intact one is there."""
    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.errors import UserError
    from tunesmith.models.hf.finetune import verify_imported_dir
    from tunesmith.models.hf.importer import config_fingerprint, import_hf
    from tunesmith.models.hf.verify import require_hf_dir

    require_hf_dir(source, "musicgen")
    fingerprint = config_fingerprint(source)
    shared = cache / fingerprint[:16]
    if shared.is_dir():
        try:
            stored = (ckpt.read_config(shared).get("meta") or {}).get("source_fingerprint")
        except UserError:
            stored = None
        if stored == fingerprint and not verify_imported_dir(shared):
            log.info("using the import of %s in %s", source, shared)
            return shared
    log.info("importing the transformers MusicGen %s into %s", source, shared)
    cache.mkdir(parents=True, exist_ok=True)
    return import_hf(source, shared)


def resolve_model_source(model: str | Path, cache: Path | None = None) -> Path:
    """``model`` as a folder tunesmith loads: a transformers MusicGen is imported (see the module doc)."""
    path = Path(model).expanduser()
    if is_hf_musicgen(path):
        return cached_import(path, cache if cache is not None else import_cache())
    return path
