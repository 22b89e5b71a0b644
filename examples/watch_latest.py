"""Alert when ``latest`` moves in a repository: a tag-watching subscriber without Kafka.

It follows the mirror's event stream (Server-Sent Events) for one tag::

    python examples/watch_latest.py --mirror-url http://127.0.0.1:8080 --repository crpabc/app
    python examples/watch_latest.py --repository crpabc/app --tag stable --token "$TOKEN"

``GET /mirror/v1/events/stream?type=registry.tag.*&subject=<repository>:<tag>`` sends
``registry.tag.added`` when the tag names a new image (``previousImageId``: the one it
moved from) and ``registry.tag.removed`` when it names none any more. The stream starts
at the end (``after=latest``); after a dropped connection the example reconnects with
``Last-Event-ID``, so it misses nothing and sees nothing twice. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

import aiohttp

STREAM = "/mirror/v1/events/stream"
RECONNECT_S = 1.0


def alert(event: dict[str, Any]) -> str:
    """What to say about one tag event (your reaction goes here: page someone, redeploy…)."""
    data = event.get("data", {})
    where = f"{data.get('repository')}:{data.get('tag')}"
    if event.get("type") == "registry.tag.added":
        previous = data.get("previousImageId")
        moved = f" (was {previous})" if previous else " (new tag)"
        return f"{event.get('time')} {where} -> {data.get('imageId')} {data.get('digest')}{moved}"
    return (
        f"{event.get('time')} {where} removed ({data.get('reason')}); "
        f"it named {data.get('imageId')}"
    )


async def follow(
    session: aiohttp.ClientSession, url: str, subject: str, token: str | None, stop: asyncio.Event
) -> None:
    last_id: str | None = None
    while not stop.is_set():
        headers = {"Accept": "text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        params = {"type": "registry.tag.*", "subject": subject}
        if last_id is None:
            params["after"] = "latest"
        else:
            headers["Last-Event-ID"] = last_id
        try:
            async with session.get(url + STREAM, params=params, headers=headers) as response:
                if response.status != 200:
                    print(
                        f"watch_latest: {response.status} {await response.text()}", file=sys.stderr
                    )
                    return
                print(f"watching {subject}", file=sys.stderr, flush=True)
                fields: dict[str, str] = {}
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                        continue
                    if "data" in fields:  # a message ends; comments (heartbeats) have no data
                        last_id = fields.get("id", last_id)
                        print(alert(json.loads(fields["data"])), flush=True)
                    fields = {}
        except aiohttp.ClientError as exc:
            print(f"watch_latest: connection lost ({exc}); resuming", file=sys.stderr)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RECONNECT_S)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror-url", default="http://127.0.0.1:8080")
    parser.add_argument("--repository", required=True, help="<registryId>/<path>, the image name")
    parser.add_argument("--tag", default="latest")
    parser.add_argument(
        "--token", default=os.environ.get("MIRROR_TOKEN"), help="API token ($MIRROR_TOKEN)"
    )
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        watcher = asyncio.create_task(
            follow(
                session,
                args.mirror_url.rstrip("/"),
                f"{args.repository}:{args.tag}",
                args.token,
                stop,
            )
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
