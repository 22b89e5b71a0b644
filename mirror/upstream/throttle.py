"""The global brakes on upstream traffic: a request rate and a concurrency cap.

One ``Throttle`` is shared by every request a client makes (all scopes walked
concurrently draw from it). A 429 with ``Retry-After`` pauses everyone, not only
the request that received it: the upstream's quota is global.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class Throttle:
    """A token bucket (``rate`` requests/s, bursts up to ``burst``) and a semaphore of ``concurrency``."""

    def __init__(
        self,
        rate: float,
        concurrency: int,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or concurrency <= 0:
            raise ValueError("rate and concurrency must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, min(rate, float(concurrency)))
        self._tokens = self.burst
        self._clock = clock
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(concurrency)

    def pause(self, seconds: float) -> None:
        """Hold every new request for ``seconds`` (the upstream asked us to back off)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def _take_token(self) -> None:
        # The lock makes waiters queue in order instead of stampeding on refill.
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free slot and a rate token; the slot is held for the request only."""
        async with self._slots:
            await self._take_token()
            yield
