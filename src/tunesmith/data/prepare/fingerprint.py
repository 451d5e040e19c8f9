"""Data identity: small, comparable fingerprints of prepared data (what a run trained on).

A fingerprint is plain data: ``{"kind", "source", "files": {relative path: {"sha1", "rows"|"bytes"}}}``
plus optional extra keys (a token cache key). Two fingerprints of the same folder differ exactly when a
listed file's content changed, appeared or disappeared.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunesmith.data.manifest import DATASET_JSON, SPLITS, manifest_path

# dataset.json keys that describe the writer, not the data: a new tunesmith version is not new data
VOLATILE_KEYS = ("created_by",)


def file_digest(path: Path, *, rows: bool = False) -> dict[str, Any]:
    """sha1 of a file's bytes and its size (``rows``: non-blank lines, for JSONL manifests)."""
    sha, size, lines = hashlib.sha1(), 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            size += len(block)
            if rows:
                lines += sum(1 for line in block.split(b"\n") if line.strip())
    out: dict[str, Any] = {"sha1": sha.hexdigest()}
    out.update({"rows": lines} if rows else {"bytes": size})
    return out


def _json_digest(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in VOLATILE_KEYS}
    text = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return {"sha1": hashlib.sha1(text.encode("utf-8")).hexdigest()}


def audio_fingerprint(root: str | Path) -> dict[str, Any]:
    """Fingerprint of a dataset written by ``tunesmith prepare``: dataset.json and every split's manifest."""
    root = Path(root)
    files: dict[str, Any] = {}
    if (root / DATASET_JSON).is_file():
        files[DATASET_JSON] = _json_digest(root / DATASET_JSON)
    for split in SPLITS:
        path = manifest_path(root, split)
        if path.is_file():
            files[path.relative_to(root).as_posix()] = file_digest(path, rows=True)
    return {"kind": "audio-manifest", "source": str(root.resolve()), "files": files}


def token_cache_fingerprint(root: str | Path, train_split: Any) -> dict[str, Any]:
    """:func:`audio_fingerprint` of ``root`` plus ``token_cache``: the name of the token-cache folder
    ``train_split`` reads (``cache_dir``; the cache key of dataset × codec weights), when it has one."""
    fingerprint = audio_fingerprint(root)
    cache_dir = getattr(train_split, "cache_dir", None)
    if cache_dir is not None:
        fingerprint["token_cache"] = Path(cache_dir).name
    return fingerprint
