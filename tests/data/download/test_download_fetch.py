"""`tunesmith download` against a loopback mirror: full download, re-run, retries, resume, corruption,
zip-slip, disk-space preflight, parallel parts; and the catalogue of official archives."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from support.download import Mirror, checksum_list, fma_archives, jamendo_archives, zip_with_entry
from tunesmith.cli import main
from tunesmith.data.download import (
    DownloadOptions,
    RetryPolicy,
    apply_checksums,
    download_archives,
    parse_checksum_list,
    parse_parts,
    read_checksum_list,
)
from tunesmith.data.download.catalogue import fma_archives as catalogue_fma
from tunesmith.data.download.catalogue import jamendo_archives as catalogue_jamendo
from tunesmith.data.download.client import fetch, probe
from tunesmith.data.download.verify import file_checksum
from tunesmith.errors import UserError

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05, timeout=10)
FMA_IDS = [2, 5, 140, 1001]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """The mirror's files (FMA + MTG-Jamendo, real layouts) built once; tests serve copies of them."""
    root = tmp_path_factory.mktemp("mirror-src")
    files = fma_archives(root / "mirror", root / "work-fma", FMA_IDS)
    files.update(jamendo_archives(root / "mirror", root / "work-jam", {0: [100, 300], 1: [201]}))
    return root / "mirror", files


@pytest.fixture
def mirror(fixtures, tmp_path):
    src, files = fixtures
    served = tmp_path / "mirror"
    shutil.copytree(src, served)
    sums = checksum_list(tmp_path / "SHA256SUMS", files)
    with Mirror(served) as m:
        m.sums = sums
        m.files = {name: served / path.relative_to(src) for name, path in files.items()}
        yield m


def _fma(mirror: Mirror, size: str = "small") -> list:
    return apply_checksums(catalogue_fma(size), read_checksum_list(str(mirror.sums)))


def _options(mirror: Mirror, **kw) -> DownloadOptions:
    return DownloadOptions(base_url=mirror.url, policy=FAST, progress=False, **kw)


def test_full_download_then_rerun_only_verifies(mirror, tmp_path):
    target = tmp_path / "fma"
    report = download_archives(_fma(mirror), target, _options(mirror))
    assert report["failed"] == [] and report["verified"] == 2
    assert report["downloaded_bytes"] == sum(p.stat().st_size for p in mirror.files.values() if p.suffix == ".zip")
    for tid in FMA_IDS:
        got = target / "fma_small" / f"{tid // 1000:03d}" / f"{tid:06d}.mp3"
        with zipfile.ZipFile(mirror.files["fma_small.zip"]) as zf:
            assert got.read_bytes() == zf.read(f"fma_small/{tid // 1000:03d}/{tid:06d}.mp3")
    assert (target / "fma_metadata" / "tracks.csv").is_file()
    assert not list(target.glob("*.part*"))
    assert len(mirror.gets()) == 2

    mirror.reset_counts()
    again = download_archives(_fma(mirror), target, _options(mirror))
    assert mirror.requests == []  # no GET, no HEAD: only the local checksums
    assert [r["status"] for r in again["archives"]] == ["complete", "complete"]
    assert again["verified"] == 2 and again["downloaded_bytes"] == 0 and again["extracted_files"] == 0


def test_cli_jamendo_set_with_parts_in_official_layout(mirror, tmp_path, capsys):
    target = tmp_path / "jam"
    argv = ["download", "jamendo", "--set", "raw_30s/audio-low", "--parts", "0-1", "--to", str(target)]
    argv += ["--base-url", mirror.url, "--checksums", str(mirror.sums), "--no-progress", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in report["archives"]] == [
        "autotagging.tsv",
        "raw_30s_audio-low-00.tar",
        "raw_30s_audio-low-01.tar",
    ]
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.mp3")) == [
        "00/100.low.mp3",
        "00/300.low.mp3",
        "01/201.low.mp3",
    ]
    paths = {r.path for r in mirror.gets()}
    assert paths == {
        "/data/raw_30s_cleantags_50artists.tsv",
        "/raw_30s/audio-low/raw_30s_audio-low-00.tar",
        "/raw_30s/audio-low/raw_30s_audio-low-01.tar",
    }


def test_http_500_then_success(mirror, tmp_path):
    mirror.fail("/fma_small.zip", 500, times=2)
    report = download_archives(_fma(mirror), tmp_path / "fma", _options(mirror))
    assert report["failed"] == []
    statuses = [r.status for r in mirror.gets("/fma_small.zip")]
    assert statuses == [500, 500, 200]


def test_retries_exhausted_is_reported_with_reason(mirror, tmp_path):
    mirror.fail("/fma_small.zip", 503, times=10)
    report = download_archives(_fma(mirror), tmp_path / "fma", _options(mirror))
    assert [f["name"] for f in report["failed"]] == ["fma_small.zip"]
    assert "503" in report["failed"][0]["reason"]
    assert not (tmp_path / "fma" / "fma_small").exists()


def test_dropped_connection_resumes_with_range(mirror, tmp_path):
    size = mirror.files["fma_small.zip"].stat().st_size
    mirror.drop("/fma_small.zip", after=size // 3)
    report = download_archives(_fma(mirror), tmp_path / "fma", _options(mirror))
    assert report["failed"] == []
    gets = mirror.gets("/fma_small.zip")
    assert [g.range for g in gets] == [None, f"bytes={size // 3}-{size - 1}"]
    assert mirror.sent["/fma_small.zip"] == size  # nothing fetched twice
    assert (
        file_checksum(tmp_path / "fma" / "fma_small.zip", "sha256")
        == hashlib.sha256(mirror.files["fma_small.zip"].read_bytes()).hexdigest()
    )


def test_corrupted_archive_names_the_file_and_unpacks_nothing(mirror, tmp_path):
    path = mirror.files["fma_small.zip"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the mirror serves a damaged copy; the list has the good checksum
    path.write_bytes(bytes(data))
    target = tmp_path / "fma"
    report = download_archives(_fma(mirror), target, _options(mirror))
    assert [f["name"] for f in report["failed"]] == ["fma_small.zip"]
    assert "checksum mismatch for fma_small.zip" in report["failed"][0]["reason"]
    assert not (target / "fma_small").exists() and not (target / "fma_small.zip").exists()
    assert (target / "fma_metadata" / "tracks.csv").is_file()  # the good archive is unaffected


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/evil-abs.txt", "fma_small/../../evil.txt"])
def test_zip_slip_entry_refuses_the_whole_archive(mirror, tmp_path, bad):
    path = zip_with_entry(mirror.files["fma_small.zip"], {"fma_small/000/000002.mp3": b"x" * 100}, bad)
    sums = checksum_list(
        tmp_path / "sums", {"fma_small.zip": path, "fma_metadata.zip": mirror.files["fma_metadata.zip"]}
    )
    archives = apply_checksums(catalogue_fma("small"), read_checksum_list(str(sums)))
    target = tmp_path / "dl" / "fma"
    report = download_archives(archives, target, _options(mirror))
    assert [f["name"] for f in report["failed"]] == ["fma_small.zip"]
    assert "refused" in report["failed"][0]["reason"] and repr(bad) in report["failed"][0]["reason"]
    assert not (target / "fma_small").exists()  # not even the good entry
    assert not (tmp_path / "dl" / "evil.txt").exists() and not Path("/tmp/evil-abs.txt").exists()


def test_symlink_entry_is_refused(mirror, tmp_path):
    path = mirror.files["fma_small.zip"]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fma_small/000/000002.mp3", b"x")
        link = zipfile.ZipInfo("fma_small/link")
        link.external_attr = (0o120777 << 16) | 0x20
        zf.writestr(link, "/etc/passwd")
    sums = checksum_list(
        tmp_path / "sums", {"fma_small.zip": path, "fma_metadata.zip": mirror.files["fma_metadata.zip"]}
    )
    report = download_archives(
        apply_checksums(catalogue_fma("small"), read_checksum_list(str(sums))), tmp_path / "fma", _options(mirror)
    )
    assert "symbolic link" in report["failed"][0]["reason"]
    assert not (tmp_path / "fma" / "fma_small").exists()


def test_disk_space_preflight_refuses_before_any_get(mirror, tmp_path, capsys):
    free = shutil.disk_usage(tmp_path).free
    sums = checksum_list(tmp_path / "sums", mirror.files, sizes={"fma_small.zip": free * 4})
    argv = ["download", "fma", "--to", str(tmp_path / "fma"), "--base-url", mirror.url, "--checksums", str(sums)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not enough free disk space" in err and "fma_small.zip" in err
    assert mirror.gets() == []
    with pytest.raises(UserError, match="not enough free disk space"):
        download_archives(
            apply_checksums(catalogue_fma("small"), read_checksum_list(str(sums))), tmp_path / "x", _options(mirror)
        )


def test_parallel_parts_and_their_resume(mirror, tmp_path):
    """Four ranged parts; a part dropped mid-way resumes from its own length; the result is byte-exact."""
    src = mirror.files["fma_small.zip"]
    size = src.stat().st_size
    url = f"{mirror.url}/fma_small.zip"
    info = probe(url, FAST)
    assert info.size == size and info.ranges and info.validator
    mirror.drop("/fma_small.zip", after=1000)  # whichever part asks first is cut after 1000 bytes
    dest = tmp_path / "fma_small.zip"
    result = fetch(
        url, dest, info, url_path="fma_small.zip", algorithm="sha1", connections=4, min_part_size=size // 8, policy=FAST
    )
    assert dest.read_bytes() == src.read_bytes()
    assert result.digest == hashlib.sha1(src.read_bytes()).hexdigest()
    gets = mirror.gets("/fma_small.zip")
    assert len(gets) == 5 and all(g.range for g in gets)
    assert mirror.sent["/fma_small.zip"] == size
    assert not list(tmp_path.glob("*.part*"))


def test_part_files_left_by_a_kill_are_resumed(mirror, tmp_path):
    """The state a SIGKILL leaves (plan + a partial part file) is continued, not refetched."""
    src = mirror.files["fma_small.zip"]
    size = src.stat().st_size
    url = f"{mirror.url}/fma_small.zip"
    info = probe(url, FAST)
    dest = tmp_path / "fma_small.zip"
    plan = {
        "url_path": "fma_small.zip",
        "size": size,
        "ranges": True,
        "validator": info.validator,
        "parts": [[0, size // 2], [size // 2, size]],
    }
    (tmp_path / "fma_small.zip.part.json").write_text(json.dumps(plan))
    (tmp_path / "fma_small.zip.part0").write_bytes(src.read_bytes()[:1234])
    (tmp_path / "fma_small.zip.part1").write_bytes(src.read_bytes()[size // 2 : size // 2 + 999])
    result = fetch(url, dest, info, url_path="fma_small.zip", algorithm="sha256", policy=FAST)
    assert dest.read_bytes() == src.read_bytes()
    assert result.resumed_from == 1234 + 999 and result.fetched == size - 1234 - 999
    assert sorted(g.range for g in mirror.gets()) == sorted(
        [f"bytes=1234-{size // 2 - 1}", f"bytes={size // 2 + 999}-{size - 1}"]
    )


def test_catalogue_holds_the_published_lists():
    fma = catalogue_fma("large")
    assert [a.name for a in fma] == ["fma_metadata.zip", "fma_large.zip"]
    assert fma[1].checksum == "497109f4dd721066b5ce5e5f250ec604dc78939e" and fma[1].algorithm == "sha1"
    assert fma[0].url() == "https://os.unil.cloud.switch.ch/fma/fma_metadata.zip"
    for name in (
        "raw_30s/audio",
        "raw_30s/audio-low",
        "autotagging_moodtheme/audio",
        "autotagging_moodtheme/audio-low",
    ):
        tars = catalogue_jamendo(name, metadata=False)
        assert len(tars) == 100 and len({t.checksum for t in tars}) == 100
        assert all(len(t.checksum) == 64 and t.algorithm == "sha256" for t in tars)
    low = catalogue_jamendo("raw_30s/audio-low", [99])
    assert low[1].name == "raw_30s_audio-low-99.tar"
    assert low[1].checksum == "abeecf42e390950e2d4a280ede67a86df3dc3df41b02c9c518e0d83da5f49701"
    assert low[1].url() == "https://cdn.freesound.org/mtg-jamendo/raw_30s/audio-low/raw_30s_audio-low-99.tar"
    assert low[0].name == "autotagging.tsv" and low[0].algorithm == "git-blob-sha1"
    assert parse_parts("0,3,5-7") == [0, 3, 5, 6, 7] and len(parse_parts(None)) == 100
    with pytest.raises(UserError):
        parse_parts("5-200")


def test_git_blob_checksum_matches_git(tmp_path):
    import subprocess

    path = tmp_path / "x.tsv"
    path.write_bytes(b"TRACK_ID\tPATH\nline\n")
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    expected = subprocess.run([git, "hash-object", str(path)], capture_output=True, text=True, check=True).stdout
    assert file_checksum(path, "git-blob-sha1") == expected.strip()


def test_checksum_list_formats():
    sha1, sha256 = "a" * 40, "b" * 64
    entries = parse_checksum_list(f"# c\n{sha1}  one.zip\n{sha256} *two.tar  123\n", "list")
    assert entries["one.zip"].algorithm == "sha1" and entries["one.zip"].size is None
    assert entries["two.tar"].algorithm == "sha256" and entries["two.tar"].size == 123
    with pytest.raises(UserError, match="list:1"):
        parse_checksum_list("xyz  one.zip\n", "list")


def test_empty_file_and_a_server_without_ranges(mirror, tmp_path):
    (mirror.root / "empty.tsv").write_bytes(b"")
    url = f"{mirror.url}/empty.tsv"
    result = fetch(url, tmp_path / "empty.tsv", probe(url, FAST), url_path="empty.tsv", algorithm="sha256")
    assert result.digest == hashlib.sha256(b"").hexdigest() and (tmp_path / "empty.tsv").read_bytes() == b""
    # no Range support: a dropped connection means starting over, and the result is still exact
    mirror.ranges = False
    size = mirror.files["fma_small.zip"].stat().st_size
    mirror.drop("/fma_small.zip", after=size // 3)
    url = f"{mirror.url}/fma_small.zip"
    info = probe(url, FAST)
    assert not info.ranges
    fetch(url, tmp_path / "small.zip", info, url_path="fma_small.zip", algorithm=None, policy=FAST)
    assert (tmp_path / "small.zip").read_bytes() == mirror.files["fma_small.zip"].read_bytes()
    assert [g.range for g in mirror.gets("/fma_small.zip")] == [None, None]
    assert mirror.sent["/fma_small.zip"] == size // 3 + size


def test_one_archive_failing_does_not_stop_the_others(mirror, tmp_path):
    mirror.throttle = (64, 0.01)  # fma_metadata.zip takes ~0.1 s; fma_small.zip fails at once (404 on GET)
    mirror.fail("/fma_small.zip", 404)
    report = download_archives(_fma(mirror), tmp_path / "fma", _options(mirror, jobs=2))
    assert [f["name"] for f in report["failed"]] == ["fma_small.zip"] and "404" in report["failed"][0]["reason"]
    assert report["archives"][0]["status"] == "done" and (tmp_path / "fma" / "fma_metadata" / "tracks.csv").is_file()


def test_unpacking_again_removes_temp_files_of_a_killed_extraction(mirror, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "fma" / "fma_small" / "000" / f".000002.mp3.tmp.{int(dead.stdout)}.abcd1234.mp3"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    report = download_archives(_fma(mirror), tmp_path / "fma", _options(mirror))
    assert report["failed"] == [] and not stale.exists()
    assert (tmp_path / "fma" / "fma_small" / "000" / "000002.mp3").is_file()


def test_remove_archives_then_rerun_checks_the_unpacked_files(mirror, tmp_path):
    target = tmp_path / "fma"
    report = download_archives(_fma(mirror), target, _options(mirror, remove_archives=True))
    assert report["failed"] == [] and all(r["removed"] for r in report["archives"])
    assert not (target / "fma_small.zip").exists() and not (target / "fma_metadata.zip").exists()
    mp3 = target / "fma_small" / "000" / "000005.mp3"
    assert mp3.is_file()
    mirror.reset_counts()
    again = download_archives(_fma(mirror), target, _options(mirror, remove_archives=True))
    assert mirror.requests == [] and [r["status"] for r in again["archives"]] == ["complete", "complete"]
    mp3.unlink()  # a file of the removed archive is gone: that archive is fetched and unpacked again
    third = download_archives(_fma(mirror), target, _options(mirror, remove_archives=True))
    assert [r["status"] for r in third["archives"]] == ["complete", "done"]
    assert [g.path for g in mirror.gets()] == ["/fma_small.zip"] and mp3.is_file()


def test_space_check_counts_only_the_archives_on_disk_at_once_when_they_are_removed(tmp_path):
    from tunesmith.data.download.preflight import SpaceNeed, check_space

    free = shutil.disk_usage(tmp_path).free
    needs = [SpaceNeed(f"part-{k}.tar", int(free * 0.4), 0) for k in range(3)]
    with pytest.raises(UserError, match="part-0.tar"):
        check_space(tmp_path, needs)  # all three kept: 1.2 × the free space
    assert check_space(tmp_path, needs, transient=1) == int(free * 0.4)  # one at a time
