"""Retrying a sink until it takes the call, and what the last failure was.

The writer thread retries each batch this way, and the ingest thread its
ClickHouse reads at a partition assignment; ``/health`` and ``/metrics`` read the
error and its age from here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tracewatch.errors import SinkError

__all__ = ["SinkRetry"]

log = logging.getLogger("tracewatch.ingest")
T = TypeVar("T")


class SinkRetry:
    """Capped exponential backoff on ``SinkError``; nothing is committed meanwhile."""

    def __init__(
        self,
        first_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.sleep = sleep
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_since = 0.0  # time.monotonic() when last_error was first set

    def __call__(self, call: Callable[[], T]) -> T:
        delay = self.first_delay_s
        while True:
            try:
                result = call()
                self.last_error = None
                return result
            except SinkError as exc:
                self.errors += 1
                if self.last_error is None:
                    self.last_error_since = time.monotonic()
                self.last_error = str(exc)
                log.warning("sink failed, retrying in %.1fs: %s", delay, exc)
                self.sleep(delay)
                delay = min(delay * 2, self.max_delay_s)
