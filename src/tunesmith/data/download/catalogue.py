"""The official archives of FMA and MTG-Jamendo, their published checksums, and checksum-list overrides.

Sources (read from the datasets' own repositories, nothing invented):

- FMA: github.com/mdeff/fma, ``README.md`` at commit 607364e7d8263f890d23c838802f29637600611f: the archive
  URLs ``https://os.unil.cloud.switch.ch/fma/fma_{metadata,small,medium,large,full}.zip``, their sha1
  checksums (the ``sha1sum -c`` lines and the "2017-05-10 rc1" release notes) and their sizes, given
  rounded in the README (342 MiB, 7.2 GiB, 22 GiB, 93 GiB, 879 GiB): exact byte sizes are not published, so
  the disk-space check asks the server (HEAD) and falls back to these.
- MTG-Jamendo: github.com/MTG/mtg-jamendo-dataset at commit 1b4fa8c32e076c73b5175c1703ae805b4109309d:
  ``scripts/download/download.py`` (URLs ``https://cdn.freesound.org/mtg-jamendo/<dataset>/<type>/<tar>``,
  the "mtg-fast" mirror, and ``https://essentia.upf.edu/documentation/datasets/mtg-jamendo/...``) and
  ``data/download/<dataset>_<type>_sha256_tars.txt`` (100 tars per set, sha256), copied into
  :mod:`tunesmith.data.download.mtg_checksums`. Set sizes are from the README (508, 156, 152, 46 GB); per-tar
  sizes are not published for every set, so a tar's fallback size is the set's size / 100.
  The metadata (``autotagging.tsv`` is a symbolic link to ``raw_30s_cleantags_50artists.tsv``;
  ``autotagging_moodtheme.tsv``) lives in that git repository: it is fetched from the pinned commit on
  raw.githubusercontent.com and checked against its git blob id in that commit's tree (``git ls-tree``).

A checksum list (``--checksums FILE``) overrides the built-in values for the names it lists: lines
``HEX  NAME`` as written by ``sha1sum``/``sha256sum`` (a ``*`` before NAME is accepted; MTG's own single-space
lists too), the algorithm told by the length of HEX (40: sha1, 64: sha256); an optional third field
``HEX  NAME  BYTES`` declares the exact size, used by the disk-space check. It serves a mirror that
repacked the archives, an updated release, and tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from tunesmith.data.download.mtg_checksums import SHA256_TARS
from tunesmith.data.download.mtg_checksums import SOURCE_COMMIT as MTG_COMMIT
from tunesmith.errors import UserError

GIB = 1 << 30
MIB = 1 << 20
GB = 10**9

FMA_BASE_URL = "https://os.unil.cloud.switch.ch/fma/"
FMA_COMMIT = "607364e7d8263f890d23c838802f29637600611f"
# name → (sha1 from the README, size as rounded in the README)
FMA_ARCHIVES: dict[str, tuple[str, int]] = {
    "fma_metadata.zip": ("f0df49ffe5f2a6008d7dc83c6915b31835dfe733", 342 * MIB),
    "fma_small.zip": ("ade154f733639d52e35e32f5593efe5be76c6d70", int(7.2 * GIB)),
    "fma_medium.zip": ("c67b69ea232021025fca9231fc1c7c1a063ab50b", 22 * GIB),
    "fma_large.zip": ("497109f4dd721066b5ce5e5f250ec604dc78939e", 93 * GIB),
    "fma_full.zip": ("0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab", 879 * GIB),
}
FMA_SIZES = ("metadata", "small", "medium", "large", "full")

JAMENDO_BASE_URL = "https://cdn.freesound.org/mtg-jamendo/"
JAMENDO_MTG_URL = "https://essentia.upf.edu/documentation/datasets/mtg-jamendo/"
JAMENDO_META_URL = f"https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/{MTG_COMMIT}/"
JAMENDO_PARTS = 100
# "<dataset>/<type>" → total size from the README
JAMENDO_SET_SIZES: dict[str, int] = {
    "raw_30s/audio": 508 * GB,
    "raw_30s/audio-low": 156 * GB,
    "autotagging_moodtheme/audio": 152 * GB,
    "autotagging_moodtheme/audio-low": 46 * GB,
}
JAMENDO_SETS = tuple(JAMENDO_SET_SIZES)
# metadata per dataset: (path in the repo at MTG_COMMIT, saved as, git blob id from that commit's tree)
JAMENDO_METADATA: dict[str, tuple[str, str, str]] = {
    "raw_30s": (
        "data/raw_30s_cleantags_50artists.tsv",
        "autotagging.tsv",
        "bedb85a7516209d5c30f41557fc189aec415a5ff",
    ),
    "autotagging_moodtheme": (
        "data/autotagging_moodtheme.tsv",
        "autotagging_moodtheme.tsv",
        "b0cc0e89b89ceaec5d94043431ea1ef48c60e8ec",
    ),
}
JAMENDO_META_SIZE = 8 * MIB  # fallback size of a metadata tsv (the largest is about 3 MB)

ALGORITHMS = ("sha1", "sha256", "git-blob-sha1")


@dataclass(frozen=True)
class Archive:
    """One file to fetch: where from, how to check it, how to unpack it.

    ``name``: the file's name in the target folder; ``url_path``: its path under ``base_url`` (also
    under ``--base-url`` for a mirror); ``algorithm``/``checksum``: the published checksum;
    ``size``: exact bytes when declared, else None; ``approx_size``: the documented (rounded) size, for
    the disk-space check when the server does not say; ``kind``: zip | tar | file (a plain file is not
    unpacked); ``role``: metadata | audio (metadata is fetched first).
    """

    name: str
    url_path: str
    base_url: str
    algorithm: str
    checksum: str
    approx_size: int
    kind: str
    role: str
    size: int | None = None

    def url(self, base_url: str | None = None) -> str:
        base = base_url or self.base_url
        return base.rstrip("/") + "/" + self.url_path


def fma_archives(size: str) -> list[Archive]:
    """fma_metadata.zip, then fma_<size>.zip unless ``size`` is "metadata"."""
    if size not in FMA_SIZES:
        raise UserError(f"unknown FMA --size {size!r}; choose one of {', '.join(FMA_SIZES)}")
    names = ["fma_metadata.zip"] + ([] if size == "metadata" else [f"fma_{size}.zip"])
    return [
        Archive(
            name=name,
            url_path=name,
            base_url=FMA_BASE_URL,
            algorithm="sha1",
            checksum=FMA_ARCHIVES[name][0],
            approx_size=FMA_ARCHIVES[name][1],
            kind="zip",
            role="metadata" if name == "fma_metadata.zip" else "audio",
        )
        for name in names
    ]


def parse_parts(text: str | None, total: int = JAMENDO_PARTS) -> list[int]:
    """``"0-9"``, ``"3"``, ``"0,2,5-7"`` → sorted part numbers; None → all ``total`` parts."""
    if text is None or not text.strip():
        return list(range(total))
    parts: set[int] = set()
    for piece in text.split(","):
        piece = piece.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", piece)
        if not match:
            raise UserError(f"--parts {text!r}: expected numbers and ranges like 0-9 or 0,3,5-7")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) else lo
        if lo > hi or hi >= total:
            raise UserError(f"--parts {text!r}: parts are 0 to {total - 1}")
        parts.update(range(lo, hi + 1))
    return sorted(parts)


def jamendo_archives(set_name: str, parts: list[int] | None = None, metadata: bool = True) -> list[Archive]:
    """The metadata tsv of the set's dataset (unless ``metadata`` is False), then its tars ``parts``."""
    if set_name not in JAMENDO_SET_SIZES:
        raise UserError(f"unknown MTG-Jamendo --set {set_name!r}; choose one of {', '.join(JAMENDO_SETS)}")
    dataset, kind = set_name.split("/")
    listed = dict(line.split()[::-1] for line in SHA256_TARS[set_name].splitlines() if line.strip())
    archives: list[Archive] = []
    if metadata:
        repo_path, save_as, blob = JAMENDO_METADATA[dataset]
        archives.append(
            Archive(save_as, repo_path, JAMENDO_META_URL, "git-blob-sha1", blob, JAMENDO_META_SIZE, "file", "metadata")
        )
    for part in parts if parts is not None else range(JAMENDO_PARTS):
        name = f"{dataset}_{kind}-{part:02d}.tar"
        archives.append(
            Archive(
                name=name,
                url_path=f"{set_name}/{name}",
                base_url=JAMENDO_BASE_URL,
                algorithm="sha256",
                checksum=listed[name],
                approx_size=JAMENDO_SET_SIZES[set_name] // JAMENDO_PARTS,
                kind="tar",
                role="audio",
            )
        )
    return archives


@dataclass(frozen=True)
class ChecksumEntry:
    algorithm: str
    checksum: str
    size: int | None


def parse_checksum_list(text: str, where: str) -> dict[str, ChecksumEntry]:
    """``HEX  NAME [BYTES]`` lines (see module doc) → name → entry; blank and ``#`` lines are skipped."""
    entries: dict[str, ChecksumEntry] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (2, 3):
            raise UserError(f"{where}:{number}: expected 'HEX  NAME' or 'HEX  NAME  BYTES', got {line[:80]!r}")
        hexdigest, name = fields[0].lower(), fields[1].lstrip("*")
        algorithm = {40: "sha1", 64: "sha256"}.get(len(hexdigest))
        if algorithm is None or not re.fullmatch(r"[0-9a-f]+", hexdigest):
            raise UserError(f"{where}:{number}: {fields[0][:70]!r} is not a sha1 (40) or sha256 (64) hex digest")
        size = None
        if len(fields) == 3:
            if not fields[2].isdigit():
                raise UserError(f"{where}:{number}: size {fields[2]!r} is not a number of bytes")
            size = int(fields[2])
        entries[name] = ChecksumEntry(algorithm, hexdigest, size)
    return entries


def read_checksum_list(source: str) -> dict[str, ChecksumEntry]:
    """A checksum list from a local file (``--checksums FILE``)."""
    path = Path(source).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--checksums {source}: cannot read ({err})") from None
    return parse_checksum_list(text, str(path))


def apply_checksums(archives: list[Archive], entries: dict[str, ChecksumEntry]) -> list[Archive]:
    """Archives with the listed names' checksum (and size, when given) replaced."""
    out = []
    for archive in archives:
        entry = entries.get(archive.name)
        if entry is not None:
            archive = replace(archive, algorithm=entry.algorithm, checksum=entry.checksum, size=entry.size)
        out.append(archive)
    return out
