"""Byte progress for downloads on :class:`tunesmith.runtime.EpochProgress` (one unit = one MiB), with the rate."""

from __future__ import annotations

import threading
import time

from tunesmith.runtime import EpochProgress, progress_enabled

MIB = 1 << 20


class ByteMeter:
    """Thread-safe: ``add(n)`` from any download thread; the bar advances one unit per whole MiB and shows
    the rate (MiB/s over the run) and the GiB done; its ETA is the runtime's."""

    def __init__(self, total_bytes: int, *, enabled: bool) -> None:
        units = max(1, -(-total_bytes // MIB))
        self.bar = EpochProgress(
            "download",
            units,
            enabled=progress_enabled(enabled) and total_bytes > 0,
            log_every=max(units // 20, 1),
            interval_s=10.0,
        )
        self.lock = threading.Lock()
        self.bytes = 0
        self.units = 0
        self.started = time.monotonic()

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            while (self.units + 1) * MIB <= self.bytes:
                self.units += 1
                elapsed = max(1e-6, time.monotonic() - self.started)
                self.bar.update({"MiB/s": self.bytes / MIB / elapsed, "GiB": self.bytes / (1 << 30)})

    def close(self) -> None:
        self.bar.close()
