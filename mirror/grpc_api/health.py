"""``grpc.health.v1`` in step with the index database, as ``/readyz`` is.

SERVING while the database answers and its migrations are applied, NOT_SERVING
while it does not (``mirror.api.health.check_ready``, the HTTP probe's own
check). A ``Check`` probes before it answers, so a load balancer sees the state
of that moment; a background task probes at start and every ``WATCH_INTERVAL_S``
so ``Watch`` streams hear of a change nobody asked about (until the first probe
is done, a ``Watch`` hears ``SERVICE_UNKNOWN``). The whole server (``""``) and the
services that read the database follow it; the others (endpoint discovery)
always serve. Without a probe (a server over a bare reader) everything serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from grpc_health.v1 import health, health_pb2

from mirror.errors import Unavailable

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]

WATCH_INTERVAL_S = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class IndexHealth(health.aio.HealthServicer):
    """The health service: ``follow`` services track the database, ``always`` ones serve."""

    def __init__(self, probe: Probe | None, follow: Sequence[str], always: Sequence[str]) -> None:
        super().__init__()
        self._probe = probe
        self._follow = ("", *follow)
        self._always = always
        self._watcher: asyncio.Task[None] | None = None
        self.serving: bool | None = None  # the last probe's verdict

    async def start(self) -> None:
        """Statuses set; the first probe runs in the background (starting waits for no database)."""
        for name in self._always:
            await self.set(name, SERVING)
        if self._probe is None:
            await self.refresh()
        else:
            self._watcher = asyncio.create_task(self._watch(), name="grpc health probe")

    async def refresh(self) -> bool:
        """Probe the database now; the statuses change when the verdict does."""
        serving, reason = True, ""
        if self._probe is not None:
            try:
                await self._probe()
            except Unavailable as exc:
                serving = False
                reason = exc.message
        if serving != self.serving:
            if self.serving is not None:
                if serving:
                    log.info("gRPC health: SERVING (the index database answers again)")
                else:
                    log.warning("gRPC health: NOT_SERVING (%s)", reason)
            self.serving = serving
            for name in self._follow:
                await self.set(name, SERVING if serving else NOT_SERVING)
        return serving

    async def Check(self, request: Any, context: Any) -> Any:
        if self._probe is not None:
            await self.refresh()
        return await super().Check(request, context)

    async def _watch(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the next round tries again; the task must not die
                log.exception("gRPC health: probe failed")
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def stop(self) -> None:
        """NOT_SERVING for everything (and no more changes), as the server goes."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.enter_graceful_shutdown()
