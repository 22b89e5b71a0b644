"""examples/on_delete.py runs and reacts to a deletion (and to nothing else)."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from mirror.events.relay import RelayOptions, run_relay
from mirror.model import Event, EventType
from mirror.settings import Settings
from tests.integration.relay_support import ROOT, WAIT, append, keyed_events, relay_env

# The relay is exercised with hand-made events (not checked against the event schemas).
pytestmark = pytest.mark.synthetic_events


async def test_on_delete_example_prints_the_deleted_image(
    db_pool: asyncpg.Pool,
    settings: Settings,
    database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    prefix = f"x{uuid.uuid4().hex[:12]}"
    image = {"id": "crpexample0000000001", "name": "crpreg/app", "digest": "sha256:ab"}
    gone = Event(EventType.IMAGE_DELETED, image["id"], {"image": image, "reason": "api"})
    await append(db_pool, [*keyed_events(12, keys=4), gone])
    relay_settings = settings.with_(kafka_bootstrap=kafka_bootstrap, kafka_topic_prefix=prefix)
    await run_relay(
        db_pool, relay_settings, stop=asyncio.Event(), once=True, options=RelayOptions()
    )

    env = relay_env(database_url, kafka_bootstrap, prefix, tmp_path)
    example = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "on_delete.py"),
        "--group", f"g{uuid.uuid4().hex[:8]}", "--from-beginning",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert example.stdout is not None
        line = await asyncio.wait_for(example.stdout.readline(), WAIT)
    finally:
        example.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(example.communicate(), WAIT)
    assert "image crpexample0000000001 deleted (api): crpreg/app@sha256:ab" in line.decode()
    assert example.returncode == 0, stderr.decode()[-2000:]
    assert "1 deletions handled" in stderr.decode()
