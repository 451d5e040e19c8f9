"""Token cache layout shared by its writer and reader: format version, folder names, storage dtype."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
TOKENS_DIR = "tokens"
KEY_LENGTH = 16
DEFAULT_SHARD_SIZE = 256  # segments per shard


def storage_dtype(bins: int) -> np.dtype:
    """Smallest signed integer type holding codes ``0 .. bins - 1``."""
    return np.dtype(np.int16) if bins <= 2**15 else np.dtype(np.int32)


def cache_dir_for(dataset_dir: str | Path, fingerprint: str) -> Path:
    return Path(dataset_dir) / TOKENS_DIR / fingerprint[:KEY_LENGTH]


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
