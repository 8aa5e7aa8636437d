"""A bound on the request bytes the OTLP receiver holds at once.

Each request reserves its body size (its Content-Length, or the body limit when the
size is not known before inflating) before reading it, and gives it back when
answered. While the budget is full a request waits a little, then is told to retry
(429 with Retry-After): concurrent exporters cannot make the receiver read and parse
more than the budget at once. One request is always admitted, so a budget smaller
than the body limit still serves one full-size request at a time. Single event loop.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["InflightBudget"]


class InflightBudget:
    """``capacity`` bytes shared by the requests in flight."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._freed: asyncio.Event | None = None  # set (and replaced) by each release

    def try_hold(self, n: int) -> bool:
        """Reserve ``n`` bytes if they fit (or nothing else is held); False otherwise."""
        if self.in_use and self.in_use + n > self.capacity:
            return False
        self.in_use += n
        return True

    def hold(self, n: int) -> None:
        """Reserve ``n`` bytes whether or not they fit."""
        self.in_use += n

    async def acquire(self, n: int, timeout: float) -> bool:
        """Reserve ``n`` bytes, waiting up to ``timeout`` seconds for room; False if none."""
        deadline = time.monotonic() + timeout
        while not self.try_hold(n):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._freed is None:
                self._freed = asyncio.Event()
            try:
                await asyncio.wait_for(self._freed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def release(self, n: int) -> None:
        """Give ``n`` bytes back and wake the requests waiting for room."""
        self.in_use -= n
        freed, self._freed = self._freed, None
        if freed is not None:
            freed.set()
