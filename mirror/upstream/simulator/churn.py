"""Steady change: pushes, tag moves and deletions at a rate, as a busy registry sees them."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from mirror.errors import ApiError
from mirror.upstream.simulator import catalog
from mirror.upstream.simulator.images import SimImage
from mirror.upstream.simulator.state import SimulatedRegistry

log = logging.getLogger(__name__)

# shares of each kind of change
PUSH, RETAG = 0.40, 0.35  # the rest (0.25) are deletions
NEW_REPOSITORY = 0.02  # share of pushes that start a new repository


class Churn:
    """Applies ``rate`` changes a second while ``run`` is running; the rate can change any time."""

    def __init__(
        self,
        registry: SimulatedRegistry,
        rate: float,
        rng: random.Random,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.registry = registry
        self.rng = rng
        self._rate = rate
        self._changed = asyncio.Event()
        self._clock = clock  # seconds; the running loop's clock unless a test gives its own
        self.idle = asyncio.Event()  # set while ``run`` waits at rate 0 (no change can happen)
        self.applied = 0

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value < 0:
            raise ValueError("churn rate must not be negative")
        self._rate = value
        self._changed.set()

    async def run(self) -> None:
        """Forever: sleep while the rate is 0, else apply changes on schedule."""
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            self._changed.clear()
            rate = self._rate
            if rate <= 0:
                self.idle.set()
                await self._changed.wait()
                self.idle.clear()
                continue
            started, done = clock(), 0
            while not self._changed.is_set():
                due = int((clock() - started) * rate) - done
                for _ in range(min(due, 10_000)):
                    self.step()
                done += due
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=min(0.1, 1.0 / rate))
                except TimeoutError:
                    pass

    def step(self) -> None:
        """One random change."""
        draw = self.rng.random()
        try:
            if draw < PUSH:
                self._push()
            elif draw < PUSH + RETAG:
                self._retag()
            else:
                self._delete()
        except ApiError as exc:  # e.g. nothing left to delete; the next step tries again
            log.debug("churn step skipped: %s", exc)
            return
        self.applied += 1

    def _push(self) -> None:
        registry, rng = self.registry, self.rng
        ref = registry.random_live_ref(rng)
        if ref is None or rng.random() < NEW_REPOSITORY:
            registry_id = rng.choice(registry.model.registry_ids)
            path = (
                f"{rng.choice(catalog.TEAMS)}/{rng.choice(catalog.SERVICES)}-{rng.randrange(10**6)}"
            )
            registry.push(f"{registry_id}/{path}")
        else:
            registry.push(registry.record(ref).name)

    def _retag(self) -> None:
        registry, rng = self.registry, self.rng
        ref = registry.random_live_ref(rng)
        if ref is None:
            return
        image = registry.record(ref)
        if image.tags and rng.random() < 0.2:
            registry.retag(image.id, remove=[rng.choice(image.tags)])
            return
        sibling = self._sibling(ref)
        if sibling is not None and sibling.tags and rng.random() < 0.6:
            # a tag moves: e.g. "stable" promoted to another build
            registry.retag(image.id, add=[rng.choice(sibling.tags)])
        else:
            registry.retag(image.id, add=[f"hotfix-{registry.last_seq + 1}"])

    def _sibling(self, ref: int) -> SimImage | None:
        registry = self.registry
        repo = registry.repo_info(registry.record(ref).repo)
        if repo.count < 2:
            return None
        other = repo.first + self.rng.randrange(repo.count)
        return registry.record(other) if other != ref and registry.is_live(other) else None

    def _delete(self) -> None:
        ref = self.registry.random_live_ref(self.rng)
        if ref is not None:
            self.registry.delete(self.registry.image_id(ref))
