"""examples/watch_latest.py as a user runs it: a subprocess following the API's event
stream alerts when ``latest`` moves in its repository, and only then (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestServer

from mirror.api.app import create_app
from mirror.model import Event, EventType
from mirror.settings import Settings
from mirror.store.outbox import append_events

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0


def tag_event(repository: str, tag: str, image: str, previous: str | None = None) -> Event:
    data = {"repository": repository, "tag": tag, "imageId": image, "digest": f"sha256:{image}"}
    if previous:
        data["previousImageId"] = previous
    return Event(EventType.TAG_ADDED, f"{repository}:{tag}", data)


async def test_watch_latest_alerts_on_moves_of_its_tag_only(
    settings: Settings, db_pool: asyncpg.Pool
) -> None:
    server = TestServer(create_app(settings, pool=db_pool, upstream=None), host="127.0.0.1")
    await server.start_server()
    example = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "watch_latest.py"),
        "--mirror-url", str(server.make_url("")), "--repository", "reg1/app",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert example.stderr is not None and example.stdout is not None
        line = await asyncio.wait_for(example.stderr.readline(), WAIT_S)
        assert b"watching reg1/app:latest" in line
        async with db_pool.acquire() as conn, conn.transaction():
            await append_events(
                conn,
                [
                    tag_event("reg1/other", "latest", "crpother"),  # another repository
                    tag_event("reg1/app", "v2", "crpnew"),  # another tag
                    tag_event("reg1/app", "latest", "crpnew", previous="crpold"),
                ],
            )
        alert = (await asyncio.wait_for(example.stdout.readline(), WAIT_S)).decode()
        assert "reg1/app:latest -> crpnew sha256:crpnew (was crpold)" in alert
        async with db_pool.acquire() as conn, conn.transaction():
            removed = {
                "repository": "reg1/app", "tag": "latest", "imageId": "crpnew",
                "digest": "sha256:crpnew", "reason": "image-deleted",
            }  # fmt: skip
            await append_events(conn, [Event(EventType.TAG_REMOVED, "reg1/app:latest", removed)])
        alert = (await asyncio.wait_for(example.stdout.readline(), WAIT_S)).decode()
        assert "reg1/app:latest removed (image-deleted); it named crpnew" in alert
    finally:
        example.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(example.wait(), WAIT_S)
        await server.close()
    assert code == 0
