"""Team / cluster config (tunesmith.team): the active file, cluster choice, //reference paths and their errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tunesmith import team
from tunesmith.config import resolve
from tunesmith.errors import UserError
from tunesmith.tasks.toy import ToyConfig

CONFIG = """\
runs_dir: runs-shared
reference: {ref}
datasets:
  fma: {data}
slurm:
  partition: cpu
  time_min: 30
clusters:
  big:
    hosts: ["login-*.big.example.org", "node-*"]
    reference: {bigref}
    slurm: {{partition: gpu, account: music}}
  small:
    hosts: ["laptop"]
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("ref", "data", "bigref"):
        (tmp_path / name).mkdir()
    path = tmp_path / "team.yaml"
    path.write_text(CONFIG.format(ref=tmp_path / "ref", data=tmp_path / "data", bigref=tmp_path / "bigref"))
    monkeypatch.setenv(team.CONFIG_ENV, str(path))
    monkeypatch.setenv(team.CLUSTER_ENV, "small")  # whatever this machine's host name
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return path


def test_cluster_is_picked_by_env_var_then_host_pattern(config_file: Path, tmp_path: Path) -> None:
    by_host = team.load_team_config(config_file, environ={}, hostname="node-17")
    assert by_host.cluster == "big" and "node-*" in by_host.cluster_reason
    assert by_host.slurm == {"partition": "gpu", "time_min": 30, "account": "music"}  # cluster over top level
    assert by_host.reference == str(tmp_path / "bigref")
    assert by_host.runs_dir == str(tmp_path / "runs-shared")  # relative to the config file's folder
    by_env = team.load_team_config(config_file, environ={team.CLUSTER_ENV: "small"}, hostname="node-17")
    assert by_env.cluster == "small" and by_env.reference == str(tmp_path / "ref")
    nothing = team.load_team_config(config_file, environ={}, hostname="elsewhere")
    assert nothing.cluster is None and nothing.slurm["partition"] == "cpu"
    with pytest.raises(UserError, match=r"TUNESMITH_CLUSTER=smal: no such cluster .*did you mean 'small'"):
        team.load_team_config(config_file, environ={team.CLUSTER_ENV: "smal"})


def test_user_default_file_is_used_without_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(team.CONFIG_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert team.config_path() is None and team.active_config().source is None
    user = tmp_path / "tunesmith" / "config.yaml"
    user.parent.mkdir()
    user.write_text(f"reference: {tmp_path}\n")
    assert team.config_path() == user and team.active_config().reference == str(tmp_path)
    monkeypatch.setenv(team.CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(UserError, match="missing.yaml: no such file"):
        team.config_path()


def test_reference_paths_resolve_in_config_values_and_cli_paths(config_file: Path, tmp_path: Path) -> None:
    assert team.resolve_root("//reference/ckpt/a") == str(tmp_path / "ref" / "ckpt" / "a")
    assert team.resolve_root("//fma/train") == str(tmp_path / "data" / "train")
    assert team.resolve_root("/plain/path") == "/plain/path"
    resolved = resolve("toy", ToyConfig, "default", ["init_from=//reference/runs/x"])
    assert resolved.config.init_from == str(tmp_path / "ref" / "runs" / "x")  # what the task reads
    assert resolved.data["init_from"] == "//reference/runs/x"  # what the signature and run.json keep
    args = argparse.Namespace(
        runs_dir=Path("//reference/runs"), files=[Path("//fma/a.wav"), Path("b")], run="//reference/r"
    )
    team.resolve_cli_paths(args)
    assert args.runs_dir == tmp_path / "ref" / "runs" and args.files == [tmp_path / "data" / "a.wav", Path("b")]
    assert args.run == str(tmp_path / "ref" / "r")


def test_reference_errors_name_the_problem(config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=r"unknown root //refrence/ .*did you mean 'reference'"):
        team.resolve_root("//refrence/x")
    (tmp_path / "ref").rmdir()
    with pytest.raises(UserError, match=r"//reference/ folder .*ref .*does not exist or cannot be read"):
        resolve("toy", ToyConfig, "default", ["init_from=//reference/x"])
    monkeypatch.setenv(team.CONFIG_ENV, str(tmp_path / "empty.yaml"))
    monkeypatch.delenv(team.CLUSTER_ENV)
    (tmp_path / "empty.yaml").write_text("runs_dir: r\n")
    with pytest.raises(UserError, match=r"no //reference/ folder is configured"):
        team.resolve_root("//reference/x")


def test_config_file_typos_name_the_closest_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("reference: /x\nclusters:\n  big:\n    hosts: [a]\n    slurm:\n      partiton: gpu\n")
    with pytest.raises(UserError, match=r"c.yaml line 6: unknown slurm key 'partiton'; did you mean 'partition'"):
        team.load_team_config(path, environ={})
    path.write_text("refrence: /x\n")
    with pytest.raises(UserError, match=r"c.yaml line 1: unknown key 'refrence'; did you mean 'reference'"):
        team.load_team_config(path, environ={})


def test_runs_dir_default_comes_from_the_team_config(config_file: Path, tmp_path: Path, monkeypatch) -> None:
    from tunesmith.artifacts.runs import default_runs_dir

    monkeypatch.delenv("TUNESMITH_RUNS", raising=False)
    monkeypatch.setenv(team.CLUSTER_ENV, "small")
    assert default_runs_dir() == tmp_path / "runs-shared"
    monkeypatch.setenv("TUNESMITH_RUNS", str(tmp_path / "mine"))
    assert default_runs_dir() == tmp_path / "mine"


def test_doctor_shows_the_active_config_and_where_each_folder_points(config_file: Path, tmp_path: Path, capsys) -> None:
    from tunesmith.cli import main

    (tmp_path / "data").rmdir()
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"config       {config_file}" in out
    assert f"//reference/ {tmp_path / 'ref'}" in out
    assert f"//fma/       {tmp_path / 'data'}  (MISSING" in out
    assert "slurm        partition=cpu, time_min=30" in out
