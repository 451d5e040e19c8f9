"""Token cache: every segment of a prepared dataset encoded once by a codec, read back by memory map.

Layout (``KEY`` = first 16 hex digits of :func:`~tunesmith.models.codec.codec_fingerprint`, which covers
the codec's weights, config and bandwidth, so another codec never reads stale tokens)::

    DIR/tokens/KEY/codec.json              what encoded it (fingerprint, rates, n_q, bins, dtype, source)
    DIR/tokens/KEY/<split>/meta.json       fingerprint, manifest hash, shard size, complete flag, stats
    DIR/tokens/KEY/<split>/shard-NNNNN.npy int16 (int32 when bins > 32768) ``[frames, K]``: the shard's
                                           segments one after another along frames
    DIR/tokens/KEY/<split>/shard-NNNNN.json its index (manifest line, offset, frames), sidecar infos, and the
                                           array's size and sha256 (a damaged shard is re-encoded)
    DIR/tokens/KEY/<split>/index.npy       int64 ``[N, 4]``: manifest line, shard, offset, frames
    DIR/tokens/KEY/<split>/infos.jsonl     sidecar metadata of each indexed segment

Shards cover fixed runs of manifest lines and appear atomically (array first, then its index), so a
killed encode resumes at the first missing shard and never duplicates work. Every encode checks the
shards it finds against their recorded size and sha256 and re-encodes a damaged one; the reader checks
sizes (``meta.json`` ``shard_bytes``) before it maps anything. Within a shard, segments of
equal length are batched together (no padding, so a segment's codes never depend on its neighbours).
A changed manifest (re-prepared dataset) makes the split stale: it is re-encoded from scratch.
"""

from __future__ import annotations

from tunesmith.data.token_cache.layout import (
    DEFAULT_SHARD_SIZE,
    FORMAT_VERSION,
    KEY_LENGTH,
    TOKENS_DIR,
    cache_dir_for,
    storage_dtype,
)
from tunesmith.data.token_cache.lock import exclusive_cache
from tunesmith.data.token_cache.reader import TokenShards
from tunesmith.data.token_cache.writer import SplitStats, ensure_token_cache

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "FORMAT_VERSION",
    "KEY_LENGTH",
    "TOKENS_DIR",
    "SplitStats",
    "TokenShards",
    "cache_dir_for",
    "ensure_token_cache",
    "exclusive_cache",
    "storage_dtype",
]
