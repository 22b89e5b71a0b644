"""The simulator passes the upstream contract, with either page token style, over REST and gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mirror.upstream.simulator import (
    SIMULATOR,
    PageTokenStyle,
    SimulatorConfig,
    create_simulator_app,
)
from mirror.upstream.simulator.grpc_app import start_simulator_grpc

from .cases import CASES, GRPC_CASES, SCENARIOS, Case, Scenario, run_case
from .grpc_client import GrpcClient
from .harness import ContractTarget


@dataclass
class Targets:
    rest: ContractTarget
    grpc: ContractTarget


@pytest.fixture(scope="module", params=[PageTokenStyle.OFFSET, PageTokenStyle.CURSOR], ids=str)
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[Targets]:
    """One simulated registry behind its REST API (aiohttp) and its gRPC API."""
    config = SimulatorConfig(
        images=3_000, seed=5, operation_delay=0.05, page_token_style=request.param
    )
    app = create_simulator_app(config)
    async with TestClient(TestServer(app)) as client:
        sim = app[SIMULATOR]
        server = await start_simulator_grpc(sim, "127.0.0.1", 0)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                yield Targets(
                    rest=ContractTarget(client=client, truth=sim.registry),
                    grpc=ContractTarget(client=GrpcClient(channel), truth=sim.registry),
                )
        finally:
            await server.stop()


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_case(simulator: Targets, case: Case) -> None:
    await run_case(simulator.rest, case)


@pytest.mark.parametrize("case", GRPC_CASES, ids=str)
async def test_grpc_case(simulator: Targets, case: Case) -> None:
    await run_case(simulator.grpc, case)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_scenario(simulator: Targets, scenario: Scenario, protocol: str) -> None:
    await scenario(getattr(simulator, protocol))
