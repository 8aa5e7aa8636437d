"""The writer thread: each handed-off batch through the ordered sinks, then commit.

ClickHouse's engine works with the GIL released, so the ingest thread consumes
and processes the next batch while this one is written. One batch is written
and at most one waits (``put`` times out while the queue is full), so a slow or
failed sink stops consumption instead of growing memory. A batch whose sinks
all succeeded has its commit targets recorded for the ingest thread, the
consumer's only user, to commit (``take_commits``): a synchronous commit from
this thread would stall behind ``poll``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from functools import partial

from tracewatch.streams.batch_sinks import BatchSink
from tracewatch.streams.pending import PendingBatch
from tracewatch.streams.retry import SinkRetry

__all__ = ["BatchWriter"]

log = logging.getLogger("tracewatch.ingest")


class BatchWriter:
    """Runs ``sinks`` in order for each batch, retrying the whole list on ``SinkError``."""

    def __init__(self, sinks: Sequence[BatchSink], retry: SinkRetry) -> None:
        self.sinks = list(sinks)
        self.retry = retry
        self.stored_events = 0
        self.stats_rows = 0
        self.flushes = 0
        self._jobs: queue.Queue[PendingBatch | None] = queue.Queue(maxsize=1)
        self._failed: BaseException | None = None
        self._commits: dict[int, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tracewatch-writer", daemon=True)
        self._thread.start()

    def put(self, batch: PendingBatch, timeout: float | None) -> None:
        """Queue ``batch``; raises ``queue.Full`` while the previous one is still waiting."""
        self._jobs.put(batch, timeout=timeout)

    def join(self) -> None:
        """Until every batch handed over is written (or the writer failed)."""
        self._jobs.join()
        self.raise_if_failed()

    def close(self) -> None:
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join()

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def raise_if_failed(self) -> None:
        if self._failed is not None:
            raise RuntimeError("the writer thread failed") from self._failed

    def take_commits(self) -> dict[int, int]:
        """Partition → offset of the batches written since the last call."""
        with self._lock:
            ready, self._commits = self._commits, {}
        return ready

    def write(self, batch: PendingBatch) -> None:
        """Every sink in order, then the commit targets (the writer thread calls this)."""
        for sink in self.sinks:
            sink.flush(batch)
        with self._lock:
            for part, off in batch.commit_to.items():
                self._commits[part] = max(off, self._commits.get(part, off))
        self.stored_events += len(batch.events)
        self.stats_rows += len(batch.closed)
        self.flushes += 1

    def _loop(self) -> None:
        while True:
            batch = self._jobs.get()
            try:
                if batch is None:
                    return
                if self._failed is None:
                    self.retry(partial(self.write, batch))
            except BaseException as exc:  # surfaced by the ingest thread at its next hand-off
                self._failed = exc
                log.exception("writing a batch failed; the worker stops")
            finally:
                self._jobs.task_done()
