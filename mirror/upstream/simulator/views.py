"""Ordered listings of a live registry: one ``View`` per (scope, filter, order).

A view is the merge of two sorted sequences, minus deleted images:

- ``static``: the generated images of the scope in the view's order. For the
  default order (id ascending) that is a few ref ranges, nothing stored
  (``RangeSeq``); for an ``orderBy`` it is an array of refs sorted once, when
  first asked for (``ArraySeq``);
- ``extra``: images pushed since start that belong to the view, kept sorted by key.

Deletions are kept as sorted *positions* in ``static``. A view catches up with
the registry's change logs (``sync``) before it answers, so a cached view costs
only the changes since its last use.

Live rank ``k`` (offset paging) and "first key after" (cursor paging) are
both answered in O(log n) key computations; a key is the tuple the order
compares, ending with the image id.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

Key = tuple[Any, ...]
KeyFn = Callable[[int], Key]


class StaticSeq(Protocol):
    """Generated images of a view, in the view's order (deleted ones included)."""

    def __len__(self) -> int: ...

    def __getitem__(self, position: int) -> int: ...

    def position(self, ref: int, key: KeyFn) -> int | None:
        """Where ``ref`` sits, or None when it is not in this sequence."""
        ...


class RangeSeq:
    """Ascending, disjoint ref ranges, concatenated: the default order needs no storage."""

    def __init__(self, runs: Sequence[range]) -> None:
        self.runs = [run for run in runs if len(run)]
        self._starts = [run.start for run in self.runs]
        self._offsets = [0]
        for run in self.runs:
            self._offsets.append(self._offsets[-1] + len(run))

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, position: int) -> int:
        i = bisect.bisect_right(self._offsets, position) - 1
        return self.runs[i].start + position - self._offsets[i]

    def position(self, ref: int, key: KeyFn) -> int | None:
        i = bisect.bisect_right(self._starts, ref) - 1
        if i < 0 or ref >= self.runs[i].stop:
            return None
        return self._offsets[i] + ref - self.runs[i].start

    def positions_of_sorted(self, refs: Sequence[int]) -> list[int]:
        """Positions of those of ``refs`` (sorted ascending) that are in the runs, ascending."""
        out: list[int] = []
        for i, run in enumerate(self.runs):
            lo = bisect.bisect_left(refs, run.start)
            hi = bisect.bisect_left(refs, run.stop)
            base = self._offsets[i] - run.start
            out.extend(base + ref for ref in refs[lo:hi])
        return out


class ArraySeq:
    """Refs sorted by the view's key, stored compactly (8 bytes an image)."""

    def __init__(self, refs: array[int]) -> None:
        self.refs = refs

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, position: int) -> int:
        return self.refs[position]

    def position(self, ref: int, key: KeyFn) -> int | None:
        target = key(ref)
        position = _first_key_at_least(self, key, target)
        if position < len(self.refs) and self.refs[position] == ref:
            return position
        return None


class RefLog:
    """Refs appended in order and read by absolute position; a prefix no reader needs is dropped."""

    def __init__(self) -> None:
        self._refs: list[int] = []
        self._start = 0

    def __len__(self) -> int:
        """Entries held (not the absolute end)."""
        return len(self._refs)

    @property
    def end(self) -> int:
        """The position the next entry will have."""
        return self._start + len(self._refs)

    def append(self, ref: int) -> None:
        self._refs.append(ref)

    def since(self, position: int) -> list[int]:
        assert position >= self._start, "that part of the log was dropped"
        return self._refs[position - self._start :]

    def drop_before(self, position: int) -> None:
        drop = min(position, self.end) - self._start
        if drop > 0:
            del self._refs[:drop]
            self._start += drop


class View:
    """One listing, live: ``page_at`` (offset paging) and ``page_after`` (cursor paging)."""

    def __init__(
        self,
        static: StaticSeq,
        key: KeyFn,
        belongs: Callable[[int], bool],
        *,
        dead: list[int],
        extra: list[int],
        dead_seen: int,
        push_seen: int,
    ) -> None:
        self.static = static
        self.key = key
        self.belongs = belongs  # does a pushed ref belong to this view (scope and filter)?
        self.dead = dead  # sorted positions in ``static`` of deleted images
        pairs = sorted((key(ref), ref) for ref in extra)
        self.extra_keys = [k for k, _ in pairs]
        self.extra_refs = [ref for _, ref in pairs]
        # where each extra ref falls in ``static``: how many static entries sort before it.
        # ``static`` never changes, so merging compares these positions, not keys.
        self.extra_at = [_first_key_at_least(static, key, k) for k in self.extra_keys]
        self.dead_seen = dead_seen
        self.push_seen = push_seen

    # -- keeping up --------------------------------------------------------------

    def sync(self, dead_log: RefLog, push_log: RefLog, n_static: int) -> None:
        """Apply the pushes, then the deletions, logged since the last call.

        Pushes go first: an image pushed and deleted since the last call is in both
        logs, and its deletion must find it in ``extra`` to take it out again.
        """
        for ref in push_log.since(self.push_seen):
            if self.belongs(ref):
                key = self.key(ref)
                i = bisect.bisect_left(self.extra_keys, key)
                if i == len(self.extra_keys) or self.extra_refs[i] != ref:
                    self.extra_keys.insert(i, key)
                    self.extra_refs.insert(i, ref)
                    self.extra_at.insert(i, _first_key_at_least(self.static, self.key, key))
        self.push_seen = push_log.end
        for ref in dead_log.since(self.dead_seen):
            if ref < n_static:
                position = self.static.position(ref, self.key)
                if position is not None:
                    i = bisect.bisect_left(self.dead, position)
                    if i == len(self.dead) or self.dead[i] != position:
                        self.dead.insert(i, position)
            else:
                self._drop_extra(ref)
        self.dead_seen = dead_log.end

    def _drop_extra(self, ref: int) -> None:
        if not self.extra_refs:
            return
        key = self.key(ref)
        i = bisect.bisect_left(self.extra_keys, key)
        if i < len(self.extra_refs) and self.extra_refs[i] == ref:
            del self.extra_keys[i]
            del self.extra_refs[i]
            del self.extra_at[i]

    # -- reading -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.static) - len(self.dead) + len(self.extra_refs)

    def iter_all(self) -> Iterator[int]:
        """Every live ref of the view, in order."""
        yield from self._merge(0, 0, len(self))

    def page_at(self, offset: int, size: int) -> list[int]:
        """Live refs at ranks ``offset .. offset + size - 1``."""
        if offset >= len(self):
            return []
        j = self._static_share(offset)
        position = (
            self._position_of_rank(j) if j < len(self.static) - len(self.dead) else len(self.static)
        )
        return list(self._merge(position, offset - j, size))

    def page_after(self, after: Key, size: int) -> list[int]:
        """Up to ``size`` live refs whose key is greater than ``after``."""
        position = _first_key_above(self.static, self.key, after)
        i = bisect.bisect_right(self.extra_keys, after)
        return list(self._merge(position, i, size))

    def _static_share(self, k: int) -> int:
        """How many of the first ``k`` live refs are static (the rest come from ``extra``)."""
        n_extra = len(self.extra_refs)
        n_static = len(self.static) - len(self.dead)
        if n_extra == 0:
            return k
        lo, hi = max(0, k - n_extra), min(k, n_static)
        while lo < hi:  # smallest j with: j static + (k - j) extra is a valid prefix
            j = (lo + hi) // 2
            i = k - j
            if self.extra_at[i - 1] > self._position_of_rank(j):
                lo = j + 1
            else:
                hi = j
        return lo

    def _position_of_rank(self, j: int) -> int:
        """Position in ``static`` of its ``j``-th live entry (0-based)."""
        position = j
        while True:
            nxt = j + bisect.bisect_right(self.dead, position)
            if nxt == position:
                return position
            position = nxt

    def _merge(self, position: int, i: int, limit: int) -> Iterator[int]:
        """Live refs from static ``position`` and extra index ``i`` on, in order."""
        static, dead = self.static, self.dead
        extra_at, extra_refs = self.extra_at, self.extra_refs
        n, n_dead, n_extra = len(static), len(dead), len(extra_refs)
        d = bisect.bisect_left(dead, position)
        for _ in range(limit):
            while d < n_dead and dead[d] == position:
                position += 1
                d += 1
            if i < n_extra and (position >= n or extra_at[i] <= position):
                yield extra_refs[i]
                i += 1
            elif position < n:
                yield static[position]
                position += 1
            else:
                return


def _first_key_at_least(static: StaticSeq, key: KeyFn, target: Key) -> int:
    lo, hi = 0, len(static)
    while lo < hi:
        mid = (lo + hi) // 2
        if key(static[mid]) < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _first_key_above(static: StaticSeq, key: KeyFn, target: Key) -> int:
    lo, hi = 0, len(static)
    while lo < hi:
        mid = (lo + hi) // 2
        if key(static[mid]) <= target:
            lo = mid + 1
        else:
            hi = mid
    return lo
