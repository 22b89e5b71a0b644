"""A bounded schemathesis run against /openapi.json: no 500, no answer outside the schema.

The API runs over a real index filled by the ingest from the simulator (so Lists
return images and Deletes reach an upstream); schemathesis generates requests
from the served schema, on a worker thread, and checks every answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import hypothesis
import pytest
import schemathesis
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from mirror.api.app import create_app
from mirror.ingest.loop import ingest_once
from mirror.model import Scope, ScopeKind
from mirror.settings import Settings
from mirror.upstream.client import UpstreamClient
from mirror.upstream.simulator import SimulatorConfig, serve_simulator

MAX_EXAMPLES = 40  # per operation: a bounded run (about 500 requests in all)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
async def api_url(settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[str]:
    config = SimulatorConfig(images=300, seed=3, operation_delay=0.05)
    async with serve_simulator(config) as upstream, aiohttp.ClientSession() as session:
        settings = settings.with_(upstream_url=upstream.url, operation_url=upstream.url)
        client = UpstreamClient(session, settings)
        scopes = [Scope(ScopeKind.FOLDER, f) for f in upstream.registry.model.folder_ids]
        await ingest_once(db_pool, client, scopes)
        server = TestServer(create_app(settings, pool=db_pool, upstream=client), host="127.0.0.1")
        await server.start_server()
        try:
            yield str(server.make_url("")).rstrip("/")
        finally:
            await server.close()


def _streams(operation: dict) -> bool:
    return "text/event-stream" in operation.get("responses", {}).get("200", {}).get("content", {})


def run_schemathesis(base_url: str) -> list[str]:
    """Every operation of the served schema, a bounded number of examples each (blocking)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    # An endless event stream cannot be checked by a call that waits for its end; its
    # answers are tested in test_events_stream.py and its heads by test_api_fuzz.py.
    operations = [op for op in operations if not _streams(op.definition.raw)]
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=10)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, report them together
            failures.append(f"{operation.label}: {exc}")
    return failures


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(api_url: str) -> None:
    failures = await asyncio.to_thread(run_schemathesis, api_url)
    assert not failures, "\n\n".join(failures)
