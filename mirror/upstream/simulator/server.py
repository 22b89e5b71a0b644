"""Running the simulator on a real socket, in-process: for tests, benchmarks and ``mirror simulate``.

async with serve_simulator(SimulatorConfig(images=5000)) as upstream:
    settings = ...(upstream_url=upstream.url, operation_url=upstream.url)
    ...
    assert upstream.registry.get(image_id) is None
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from mirror.listen import start_site
from mirror.upstream.simulator.app import create_simulator_app
from mirror.upstream.simulator.config import SimulatorConfig
from mirror.upstream.simulator.grpc_app import SimulatorGrpc, start_simulator_grpc
from mirror.upstream.simulator.runtime import SIMULATOR, Simulator
from mirror.upstream.simulator.state import SimulatedRegistry


@dataclass(slots=True)
class RunningSimulator:
    """A simulator listening on ``url`` (``http://host:port``, the base URL of both services)."""

    url: str
    simulator: Simulator
    runner: web.AppRunner
    grpc: SimulatorGrpc | None = None  # the gRPC API, when started with ``grpc_port``

    @property
    def grpc_address(self) -> str | None:
        return self.grpc.address if self.grpc is not None else None

    @property
    def registry(self) -> SimulatedRegistry:
        return self.simulator.registry

    async def close(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()
        await self.runner.cleanup()


async def start_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    simulator: Simulator | None = None,
    grpc_port: int | None = None,
) -> RunningSimulator:
    """Build and start a simulator; ``port=0`` picks a free port (read it from ``url``).

    With ``grpc_port`` (0: a free one) it serves its gRPC API too (``grpc_address``).
    """
    app = create_simulator_app(config, simulator=simulator)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        url = await start_site(runner, host, port)
        grpc = None
        if grpc_port is not None:
            grpc = await start_simulator_grpc(app[SIMULATOR], host, grpc_port)
    except BaseException:
        await runner.cleanup()
        raise
    return RunningSimulator(url, app[SIMULATOR], runner, grpc)


@contextlib.asynccontextmanager
async def serve_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    grpc_port: int | None = None,
) -> AsyncIterator[RunningSimulator]:
    """``start_simulator`` as an async context manager that always stops it."""
    running = await start_simulator(config, host=host, port=port, grpc_port=grpc_port)
    try:
        yield running
    finally:
        await running.close()
