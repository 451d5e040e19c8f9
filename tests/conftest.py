"""Shared pytest fixtures: tests run on CPU with tiny models."""

from __future__ import annotations

import os

os.environ.setdefault("TUNESMITH_NO_PROGRESS", "1")
