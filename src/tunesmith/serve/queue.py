"""The request queue of `tunesmith serve`: bounded, drained in micro-batches by the one generation thread.

Requests wait in a bounded queue; one worker takes up to ``max_batch`` requests with the same
settings (duration, cfg, temperature, top-k, top-p), waiting at most ``batch_wait_ms`` for more to
arrive, and generates them as one batch on :func:`generation_thread`. A full queue raises
:class:`QueueFull`; a batch whose clients all left is aborted at the next decoding step.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tunesmith.errors import UserError

log = logging.getLogger("tunesmith.serve")


@dataclasses.dataclass
class Limits:
    """What one request may ask for, and how requests are batched."""

    max_duration: float = 30.0  # seconds of audio per request
    max_prompt_chars: int = 500
    max_cfg: float = 20.0
    max_temperature: float = 5.0
    max_top_k: int = 2048  # the model's codebook size (larger values would mean "no top-k")
    max_batch: int = 8  # requests generated together
    max_queue: int = 32  # requests waiting (not yet generating); beyond → 503
    batch_wait_ms: float = 10.0  # how long the first request of a batch waits for companions

    def check(self) -> None:
        for name in ("max_duration", "max_prompt_chars", "max_batch", "max_queue"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name.replace('_', '-')}={getattr(self, name)}: must be positive")
        if not (self.batch_wait_ms >= 0 and math.isfinite(self.batch_wait_ms)):
            raise UserError(f"--batch-wait-ms={self.batch_wait_ms}: must be >= 0")


class QueueFull(Exception):
    """The queue holds ``max_queue`` waiting requests; ``retry_after`` is a guess in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in about {retry_after} s")
        self.retry_after = retry_after


class _Abandoned(Exception):
    """Every client of a running batch has disconnected."""


@dataclasses.dataclass(eq=False)
class Job:
    item: Any  # GenerationItem
    future: asyncio.Future
    enqueued: float = dataclasses.field(default_factory=time.perf_counter)
    started: float = 0.0
    cancelled: bool = False


@dataclasses.dataclass
class Counters:
    accepted: int = 0
    completed: int = 0
    rejected: int = 0  # queue full
    cancelled: int = 0  # client left (waiting or running)
    failed: int = 0
    batches: int = 0
    aborted_batches: int = 0


def generation_thread() -> ThreadPoolExecutor:
    """The one thread that loads, warms up and runs the model.

    On CPU, torch keeps one OpenMP thread team per calling thread; a second team (the main thread's,
    from loading there) makes libgomp throttle its spin-waiting once its threads outnumber the cores,
    and every op then pays a thread wake-up: measured 2.4x slower single requests on 2 cores. Doing
    everything on this thread keeps a single team.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunesmith-generate")


class BatchQueue:
    """A bounded queue of generation jobs in front of a Generator, drained in micro-batches by one thread.

    Jobs are submitted and cancelled on the event loop; the worker coroutine forms batches of up to
    ``max_batch`` compatible jobs (same ``batch_key``, in arrival order) and runs each in a single
    worker thread, so the model is only ever used by one thread.
    """

    def __init__(self, generator: Any, limits: Limits, executor: ThreadPoolExecutor | None = None) -> None:
        self.generator = generator
        self.limits = limits
        self.waiting: collections.deque[Job] = collections.deque()
        self.running: list[Job] = []
        self.counters = Counters()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = executor or generation_thread()
        self._batch_seconds = 1.0  # running mean of a batch's wall time, for Retry-After

    # ------------------------------------------------------------------ event-loop side

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="tunesmith-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in list(self.waiting) + self.running:
            job.cancelled = True
            if not job.future.done():
                job.future.set_exception(QueueFull(5))
        self.waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def retry_after(self) -> int:
        batches_ahead = len(self.waiting) / self.limits.max_batch + (1 if self.running else 0)
        return max(1, min(60, math.ceil(batches_ahead * self._batch_seconds)))

    def submit(self, item: Any) -> Job:
        """Queue ``item``; raises QueueFull when ``max_queue`` jobs are already waiting."""
        if len(self.waiting) >= self.limits.max_queue:
            self.counters.rejected += 1
            raise QueueFull(self.retry_after())
        job = Job(item, asyncio.get_running_loop().create_future())
        self.waiting.append(job)
        self.counters.accepted += 1
        assert self._arrived is not None
        self._arrived.set()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: a waiting job leaves the queue now; a running batch stops once all its clients left."""
        if job.cancelled or job.future.done():
            return
        job.cancelled = True
        self.counters.cancelled += 1
        with contextlib.suppress(ValueError):  # not waiting: running, and the worker thread sees the flag
            self.waiting.remove(job)

    def stats(self) -> dict[str, Any]:
        return {"queued": len(self.waiting), "running": len(self.running), **dataclasses.asdict(self.counters)}

    def _take_batch(self) -> list[Job]:
        """The oldest waiting job and up to max_batch - 1 later ones with the same settings."""
        first = self.waiting.popleft()
        batch = [first]
        key = first.item.batch_key()
        for job in list(self.waiting):
            if len(batch) >= self.limits.max_batch:
                break
            if job.item.batch_key() == key:
                self.waiting.remove(job)
                batch.append(job)
        return batch

    def _companions_possible(self, batch: list[Job]) -> bool:
        return len(batch) < self.limits.max_batch and self.limits.batch_wait_ms > 0

    async def _worker(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self.waiting:
                self._arrived.clear()
                await self._arrived.wait()
            batch = self._take_batch()
            deadline = loop.time() + self.limits.batch_wait_ms / 1000.0
            while self._companions_possible(batch) and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
                key = batch[0].item.batch_key()
                for job in list(self.waiting):
                    if len(batch) < self.limits.max_batch and job.item.batch_key() == key:
                        self.waiting.remove(job)
                        batch.append(job)
            batch = [job for job in batch if not job.cancelled]
            if not batch:
                continue
            self.running = batch
            start = time.perf_counter()
            for job in batch:
                job.started = start
            try:
                results = await loop.run_in_executor(self._executor, self._generate, batch)
            except _Abandoned:
                self.counters.aborted_batches += 1
                log.info("batch of %d abandoned by its clients; stopped", len(batch))
            except Exception as err:  # a failure answers this batch's requests with 500, the server lives on
                log.exception("generation failed")
                self.counters.failed += len(batch)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
            else:
                self.counters.batches += 1
                for job, result in zip(batch, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
                        self.counters.completed += 1
            finally:
                self.running = []
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.perf_counter() - start)

    # ------------------------------------------------------------------ worker-thread side

    def _generate(self, batch: list[Job]) -> list[Any]:
        def on_step(done: int, total: int) -> None:
            if all(job.cancelled for job in batch):
                raise _Abandoned

        return self.generator.generate([job.item for job in batch], on_step=on_step)
