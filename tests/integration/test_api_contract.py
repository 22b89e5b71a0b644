"""The mirror passes the upstream contract unchanged: the simulator's own cases and
scenarios (tests/contract) run against the local API after a real ingest of the
same simulated registry, checked against the simulator's truth and parsed
strictly with the official SDK's protobuf messages, over REST and over gRPC
(the gRPC listener on the same readers as the HTTP app)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mirror.api.app import create_app
from mirror.api.appkeys import DELETES, IMAGES
from mirror.grpc_api.server import start_grpc_server
from mirror.ingest.loop import ingest_once
from mirror.ingest.summary import WalkStatus
from mirror.model import Scope, ScopeKind
from mirror.settings import Settings
from mirror.store.pool import create_pool
from mirror.upstream.client import UpstreamClient
from mirror.upstream.simulator import PageTokenStyle, SimulatorConfig, serve_simulator
from tests.contract.cases import CASES, GRPC_CASES, SCENARIOS, Case, Scenario, run_case
from tests.contract.grpc_client import GrpcClient
from tests.contract.harness import ContractTarget
from tests.postgres_fixture import dsn_with_database, new_database_name


@dataclass
class Targets:
    rest: ContractTarget
    grpc: ContractTarget


@pytest.fixture(scope="module", params=[PageTokenStyle.OFFSET, PageTokenStyle.CURSOR], ids=str)
async def mirror_target(
    request: pytest.FixtureRequest, postgres_dsn: str, template_database: str
) -> AsyncIterator[Targets]:
    """The mirror's APIs over an index ingested from a simulator (either token style upstream)."""
    name = new_database_name("api_contract")
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    await admin.close()
    config = SimulatorConfig(
        images=3_000, seed=5, operation_delay=0.05, page_token_style=request.param
    )
    try:
        async with (
            serve_simulator(config) as upstream,
            aiohttp.ClientSession() as session,
        ):
            settings = Settings.load(
                env={"MIRROR_DATABASE_URL": dsn_with_database(postgres_dsn, name)},
                upstream_url=upstream.url,
                operation_url=upstream.url,
            )
            pool = await create_pool(dsn_with_database(postgres_dsn, name), max_size=8)
            try:
                client = UpstreamClient(session, settings)
                scopes = [Scope(ScopeKind.FOLDER, f) for f in upstream.registry.model.folder_ids]
                summary = await ingest_once(pool, client, scopes)
                assert all(r.status is WalkStatus.COMPLETE for r in summary.scopes), summary
                app = create_app(settings, pool=pool, upstream=client)
                async with TestClient(TestServer(app)) as api:
                    listener = await start_grpc_server(
                        settings, app[IMAGES], app[DELETES], host="127.0.0.1", port=0
                    )
                    try:
                        async with grpc.aio.insecure_channel(listener.address) as channel:
                            yield Targets(
                                rest=ContractTarget(client=api, truth=upstream.registry),
                                grpc=ContractTarget(
                                    client=GrpcClient(channel), truth=upstream.registry
                                ),
                            )
                    finally:
                        await listener.stop()
            finally:
                await pool.close()
    finally:
        admin = await asyncpg.connect(postgres_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_case(mirror_target: Targets, case: Case) -> None:
    await run_case(mirror_target.rest, case)


@pytest.mark.parametrize("case", GRPC_CASES, ids=str)
async def test_grpc_case(mirror_target: Targets, case: Case) -> None:
    await run_case(mirror_target.grpc, case)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_scenario(mirror_target: Targets, scenario: Scenario, protocol: str) -> None:
    await scenario(getattr(mirror_target, protocol))
