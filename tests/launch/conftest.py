"""Fixtures of the launch tests: one uninterrupted long toy run that every exact-resume test compares to."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.grids import LONG, train_reference

REFERENCE_LR = 0.01


@pytest.fixture(scope="session")
def long_reference(tmp_path_factory) -> Path:
    """`tunesmith train toy default LONG optim.lr=0.01`, never interrupted (its run folder)."""
    return train_reference(tmp_path_factory.mktemp("reference"), [*LONG, f"optim.lr={REFERENCE_LR}"])


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node Slurm cluster (munged + slurmctld + slurmd) for the session, stopped at teardown;
    the tests that use it skip, with the exact reason printed, when it cannot start here."""
    from support.slurm_cluster import ClusterUnavailable, start_cluster

    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as err:
        print(f"\nreal-Slurm tests skipped: {err}")
        pytest.skip(f"cannot start a test Slurm cluster: {err}")
    print(f"\ntest Slurm cluster up in {cluster.folder}")
    yield cluster
    cluster.stop()
