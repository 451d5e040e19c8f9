"""``tunesmith download``: the official FMA and MTG-Jamendo archives, fetched resumably, verified, unpacked safely.

Modules: ``catalogue`` (the archive lists, published checksums, checksum-list overrides), ``mtg_checksums``
(MTG-Jamendo's sha256 lists, verbatim), ``client`` (HTTP with Range resume, retries and backoff, parallel
parts), ``verify`` (sha1/sha256/git blob ids, hashing while receiving), ``extract`` (zip/tar unpacking that
refuses zip-slip entries and links), ``preflight`` (free disk), ``progress`` (bytes on the runtime's bar)
and ``pipeline`` (:func:`download_archives`: all of it in order, and the report).
"""

from __future__ import annotations

from tunesmith.data.download.catalogue import (
    FMA_SIZES,
    JAMENDO_SETS,
    Archive,
    apply_checksums,
    fma_archives,
    jamendo_archives,
    parse_checksum_list,
    parse_parts,
    read_checksum_list,
)
from tunesmith.data.download.client import DownloadError, RetryPolicy
from tunesmith.data.download.extract import UnsafeArchiveError, extract_archive
from tunesmith.data.download.pipeline import REPORT_FILE, STATE_FILE, DownloadOptions, download_archives

__all__ = [
    "FMA_SIZES",
    "JAMENDO_SETS",
    "REPORT_FILE",
    "STATE_FILE",
    "Archive",
    "DownloadError",
    "DownloadOptions",
    "RetryPolicy",
    "UnsafeArchiveError",
    "apply_checksums",
    "download_archives",
    "extract_archive",
    "fma_archives",
    "jamendo_archives",
    "parse_checksum_list",
    "parse_parts",
    "read_checksum_list",
]
