"""When prepare shows a progress bar (the bar itself is :class:`tunesmith.runtime.EpochProgress`)."""

from __future__ import annotations

import os
import sys

from tunesmith import runtime


def progress_enabled(requested: bool) -> bool:
    """:func:`tunesmith.runtime.progress_enabled`, except that ``TUNESMITH_NO_PROGRESS=0`` leaves bars on."""
    if os.environ.get("TUNESMITH_NO_PROGRESS") == "0":
        return requested and sys.stderr.isatty()
    return runtime.progress_enabled(requested)
