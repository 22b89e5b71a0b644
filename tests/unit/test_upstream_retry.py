"""Backoff, jitter and Retry-After parsing; the throttle's rate and pause."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from mirror.upstream.retry import RetryPolicy, parse_retry_after
from mirror.upstream.throttle import Throttle


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=2.0)
    for attempt in range(1, 12):
        ceiling = min(2.0, 0.1 * 2 ** (attempt - 1))
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
    # full jitter: the delays spread instead of all retrying together
    assert len({round(policy.delay(5), 4) for _ in range(50)}) > 10


def test_retry_after_wins_over_backoff_and_is_bounded() -> None:
    policy = RetryPolicy(base_delay=0.1, max_retry_after=30.0)
    assert 7.0 <= policy.delay(1, retry_after=7.0) <= 7.2
    assert 30.0 <= policy.delay(1, retry_after=10_000.0) <= 30.2


def test_should_retry_stops_at_attempts_and_elapsed_time() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed=10.0)
    assert policy.should_retry(1, 0.0, 1.0)
    assert not policy.should_retry(3, 0.0, 1.0)
    assert not policy.should_retry(1, 9.5, 1.0)


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=20), usegmt=True)
    assert parse_retry_after(later, now=now) == 20.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0


async def test_throttle_caps_concurrency() -> None:
    throttle = Throttle(rate=10_000, concurrency=2)
    active = 0
    peak = 0

    async def request() -> None:
        nonlocal active, peak
        async with throttle.slot():
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(request() for _ in range(10)))
    assert peak == 2


async def test_throttle_limits_rate_after_the_burst() -> None:
    throttle = Throttle(rate=50, concurrency=10, burst=1)
    started = time.monotonic()
    for _ in range(6):
        async with throttle.slot():
            pass
    # 1 from the burst, then 5 at 50/s: at least ~0.1 s (a lower bound, not a timing budget)
    assert time.monotonic() - started >= 0.09


async def test_throttle_pause_holds_new_requests() -> None:
    throttle = Throttle(rate=1000, concurrency=4)
    throttle.pause(0.1)
    started = time.monotonic()
    async with throttle.slot():
        pass
    assert time.monotonic() - started >= 0.09
