"""The simulator passes the upstream contract, with either page token style."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mirror.upstream.simulator import (
    SIMULATOR,
    PageTokenStyle,
    SimulatorConfig,
    create_simulator_app,
)

from .cases import CASES, SCENARIOS, Case, Scenario, run_case
from .harness import ContractTarget


@pytest.fixture(scope="module", params=[PageTokenStyle.OFFSET, PageTokenStyle.CURSOR], ids=str)
async def simulator_target(request: pytest.FixtureRequest) -> AsyncIterator[ContractTarget]:
    config = SimulatorConfig(
        images=3_000, seed=5, operation_delay=0.05, page_token_style=request.param
    )
    app = create_simulator_app(config)
    async with TestClient(TestServer(app)) as client:
        yield ContractTarget(client=client, truth=app[SIMULATOR].registry)


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_case(simulator_target: ContractTarget, case: Case) -> None:
    await run_case(simulator_target, case)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_scenario(simulator_target: ContractTarget, scenario: Scenario) -> None:
    await scenario(simulator_target)
