"""Dynamic batching: concurrent requests share the engine's decode steps.

One worker thread owns the engine. It waits for rows (one row = one prompt x one choice) and gathers up to
`max_batch` of them: it starts the batch once no new row has come for `batch_wait_ms`, or `batch_wait_max_ms`
after the oldest row arrived, whichever is first. The quiet gap catches a burst whose requests trickle in
(clients build and send them one after another) without making a lone request wait long. The batch runs as
one `engine.stream` call with per-row DecodeConfigs. Each row's StepEvents go back to its request through the
row's `deliver` callback (which hops onto the event loop with `call_soon_threadsafe`). A row whose client went
away has `cancelled` set; the engine polls it each step and finishes the row early.

This is batch-level batching: rows that arrive while a batch decodes wait for the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from safecls.errors import SafeclsError
from safecls.inference.config import DecodeConfig
from safecls.inference.results import StepEvent
from safecls.serve.prometheus import Metrics

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More rows than `max_queue` would be waiting."""


class ServerStopping(Exception):
    """The server shut down before the row ran."""


@dataclass(eq=False)
class RowJob:
    prompt: Any  # str or chat messages (engine Prompt)
    config: DecodeConfig
    deliver: Callable[[StepEvent | BaseException], None]  # called on the worker thread; must not block
    cancelled: bool = False  # set by the request's side; a plain bool store is atomic under the GIL
    submitted: float = field(default_factory=time.monotonic)
    done: bool = False


class Batcher:
    def __init__(self, engine: Any, *, max_batch: int, batch_wait_ms: float, max_queue: int,
                 batch_wait_max_ms: float | None = None, metrics: Metrics | None = None):
        self.engine = engine
        self.max_batch, self.max_queue = max_batch, max_queue
        self.wait_s = batch_wait_ms / 1000
        self.max_wait_s = (batch_wait_max_ms if batch_wait_max_ms is not None else batch_wait_ms) / 1000
        self.metrics = metrics or Metrics()
        self._pending: deque[RowJob] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="safecls-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancels the running batch and fails waiting rows with ServerStopping."""
        with self._cond:
            self._stopping = True
            waiting = list(self._pending)
            self._pending.clear()
            self.metrics.queue_depth.set(0)
            self._cond.notify_all()
        for job in waiting:
            self._deliver(job, ServerStopping("the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("batcher thread still decoding after %.0f s; leaving it (daemon)", timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    # ---- request side ----------------------------------------------------------------------------------------------
    def submit(self, jobs: list[RowJob]) -> None:
        """All of a request's rows are admitted together or none is. Raises QueueFull or ServerStopping."""
        with self._cond:
            if self._stopping or self._thread is None:
                raise ServerStopping("the server is not running (starting up or shutting down)")
            if len(self._pending) + len(jobs) > self.max_queue:
                self.metrics.rejected.inc(len(jobs))
                raise QueueFull(f"{len(self._pending)} rows are waiting (max_queue {self.max_queue})")
            self._pending.extend(jobs)
            self.metrics.queue_depth.set(len(self._pending))
            self._cond.notify()

    # ---- worker ----------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            if jobs:
                self._run(jobs)

    def _take(self) -> list[RowJob] | None:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            # the cap counts from the oldest row's arrival: rows that queued behind a long batch go at once
            cap = self._pending[0].submitted + self.max_wait_s
            while len(self._pending) < self.max_batch and not self._stopping:
                left = min(cap, self._pending[-1].submitted + self.wait_s) - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stopping:
                return None
            jobs = []
            while self._pending and len(jobs) < self.max_batch:
                job = self._pending.popleft()
                if not job.cancelled:  # its client left while it waited
                    jobs.append(job)
            self.metrics.queue_depth.set(len(self._pending))
            return jobs

    def _run(self, jobs: list[RowJob]) -> None:
        m = self.metrics
        m.observe_batch(len(jobs))
        m.running.set(len(jobs))
        started = False
        try:
            events = self.engine.stream([j.prompt for j in jobs], [j.config for j in jobs],
                                        cancelled=lambda b: jobs[b].cancelled or self._stopping)
            for ev in events:
                started = True
                job = jobs[ev.row]
                if ev.finished:
                    job.done = True
                self._deliver(job, ev)
            for job in jobs:
                # a cancelled row may end without a final event (its client is gone); any other would hang
                if not job.done and not job.cancelled:
                    job.done = True
                    self._deliver(job, RuntimeError("the engine ended a batch without finishing this row"))
        except Exception as e:  # noqa: BLE001 - every failure must reach the requests, or they hang
            if not started and len(jobs) > 1 and isinstance(e, SafeclsError):
                # a bad row (one the request-side checks missed) fails before the first step: isolate it
                logger.info("batch of %d failed before its first step (%s); running its rows one by one", len(jobs), e)
                for job in jobs:
                    self._run([job])
                return
            logger.exception("engine batch of %d rows failed", len(jobs))
            for job in jobs:
                if not job.done:
                    job.done = True
                    self._deliver(job, e)
        finally:
            m.running.set(0)

    @staticmethod
    def _deliver(job: RowJob, item: StepEvent | BaseException) -> None:
        try:
            job.deliver(item)
        except Exception:  # noqa: BLE001 - e.g. the request's event loop already closed
            logger.debug("could not deliver to a row", exc_info=True)
