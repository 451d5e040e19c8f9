"""When prepare shows a progress bar: :func:`tunesmith.runtime.progress_enabled` (the bar itself is
:class:`tunesmith.runtime.EpochProgress`)."""

from __future__ import annotations

from tunesmith.runtime import progress_enabled

__all__ = ["progress_enabled"]
