"""The demo's "try:" block: every command it prints works against the API it started."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from mirror.api.app import create_app
from mirror.runner.demo import curl_lines
from mirror.settings import Settings
from mirror.stats.queries import fetch_layer_report
from tests.integration.stats_world import IndexWriter, make_image

D = [f"sha256:{i:064x}" for i in range(4)]
IMAGE = make_image(
    "crp00000000000000001", "crpreg1/team/app", (D[0], 10), [(D[1], 100), (D[2], 200)], ["v1"]
)
OTHER = make_image("crp00000000000000002", "crpreg1/team/web", (D[3], 10), [(D[1], 100)])


async def test_every_printed_command_answers(
    db_pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    async with db_pool.acquire() as conn:
        writer = IndexWriter(conn)
        await writer.push([IMAGE, OTHER], folder_id="b1gfolder1")
    demo_dir = tmp_path / "demo data"
    printed_settings = settings.with_(database_url=None, data_dir=demo_dir)
    server = TestServer(create_app(settings, pool=db_pool), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        report = await fetch_layer_report(db_pool, limit=3, reclaimable_limit=0)
        lines = await curl_lines(db_pool, base, report, printed_settings)
        assert lines[0] == "try:"
        commands = [line.strip() for line in lines[1:]]
        urls = [re.fullmatch(r"curl -s '(.+)'", c) for c in commands if c.startswith("curl")]
        async with aiohttp.ClientSession() as session:
            answers = {}
            for match in urls:
                assert match is not None
                async with session.get(match.group(1)) as response:
                    assert response.status == 200, (match.group(1), await response.text())
                    answers[match.group(1)] = await response.json()
    finally:
        await server.close()

    paths = [u.split(base, 1)[1] for u in answers]
    assert "/mirror/v1/stats" in paths  # the unscoped stats
    assert f"/mirror/v1/images/{IMAGE.id}/usage" in paths
    (filtered,) = [u for u in answers if "filter=" in u]
    assert [i["id"] for i in answers[filtered]["images"]] == [IMAGE.id]  # the real <name>
    assert commands[-1] == f"mirror stats --data-dir {shlex.quote(str(demo_dir))}"
    # without an embedded data dir there is nothing to point `mirror stats` at
    assert not any(c.startswith("mirror stats") for c in await curl_lines(db_pool, base, report))
