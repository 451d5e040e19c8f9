"""Shared pytest fixtures: tests run on CPU with tiny models."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TUNESMITH_NO_PROGRESS", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one intra-op thread, and a shared 2-core machine never oversubscribes.
    Opt in per module: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """The quick demo (a real prepare → train → encode → generate → review chain) run once per session under
    umask 022; see tests/support/pipeline.py. Treat its folder as read-only: several tests read it."""
    from support.pipeline import run_quick_demo

    return run_quick_demo(tmp_path_factory.mktemp("quick_demo") / "demo")
