"""When and how long to wait before trying an upstream request again.

``RetryPolicy`` decides *whether* a failure is worth another attempt and *how long*
to sleep first: exponential backoff with full jitter, or the server's
``Retry-After`` when it gave one. The sleeping itself happens in the client,
outside any ``except`` block.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Statuses that mean "not now" rather than "never": throttling, overload and
# gateway trouble. 500 is included for idempotent reads (the cloud answers
# INTERNAL for transient backend hiccups).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# For requests that change something (Delete) only what proves the request was
# not acted upon: throttled or refused before processing.
RETRYABLE_STATUSES_UNSAFE = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and in total time."""

    max_attempts: int = 10
    base_delay: float = 0.1
    max_delay: float = 20.0
    max_elapsed: float = 300.0  # give up once this much time went by since the first attempt
    max_retry_after: float = 120.0  # never trust a Retry-After longer than this

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before attempt ``attempt + 1`` (``attempt`` counts from 1).

        A ``Retry-After`` from the server wins over backoff (bounded by ``max_retry_after``),
        with a little jitter added so that many waiting clients do not return together.
        """
        if retry_after is not None:
            bounded = min(max(retry_after, 0.0), self.max_retry_after)
            return bounded + random.uniform(0, min(1.0, self.base_delay * 2))
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)

    def should_retry(self, attempt: int, elapsed: float, next_delay: float) -> bool:
        return attempt < self.max_attempts and elapsed + next_delay <= self.max_elapsed


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
