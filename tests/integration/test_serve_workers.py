"""``mirror serve --workers N``: N processes answering on one port, stopped together.

The kernel spreads connections over the processes (``SO_REUSEPORT``): the tests look
at which process holds each accepted connection (``/proc``), not at timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.integration.test_api_cli import announced, child_env, run_serve

ANNOUNCED = r"2 processes answer on (http://\S+)"


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def established_on(pid: int, port: int) -> int:
    """How many TCP connections accepted on ``port`` the process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def environ_of(pid: int) -> dict[str, str]:
    """The environment a process was started with."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def gone(pid: int) -> bool:
    """Exited (reaped, or a zombie its new parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_until_gone(pid: int) -> None:
    for _ in range(300):  # 30 s
        if gone(pid):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"process {pid} still runs")


LIST = "/container-registry/v1/images?folderId=f"
LISTED = re.compile(
    r'^mirror_api_request_duration_seconds_count\{method="GET",'
    r'route="/container-registry/v1/images",status="200"\} (\S+)$',
    re.MULTILINE,
)


async def both_answer(url: str, pids: list[int]) -> tuple[dict[int, int], int]:
    """Open 20 connections at a time, a List on each, until each process holds some (a
    worker listens a moment after the first process announces the port); the connections
    each holds, and how many Lists were answered."""
    port = int(url.rsplit(":", 1)[1])
    listed = 0
    async with asyncio.timeout(60):
        while True:
            connector = aiohttp.TCPConnector(limit=20)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def list_page() -> int:
                    async with session.get(url + LIST) as r:
                        await r.read()
                        return r.status

                statuses = await asyncio.gather(*(list_page() for _ in range(20)))
                assert set(statuses) == {200}, statuses
                listed += len(statuses)
                held = {pid: established_on(pid, port) for pid in pids}
            if all(held.values()):
                return held, listed
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def two_processes(
    database_url: str,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, int, dict[int, int], int]]:
    """``mirror serve --workers 2`` once both processes answer: the first process, its URL,
    the worker's pid, the connections each holds and the Lists answered (``both_answer``)."""
    process = await run_serve(
        "--port", "0", "--workers", "2", "--database-url", database_url, env=child_env()
    )  # fmt: skip
    worker = None
    try:
        url = await announced(process, ANNOUNCED)
        (worker,) = children_of(process.pid)
        held, listed = await both_answer(url, [process.pid, worker])
        yield process, url, worker, held, listed
    finally:
        # the worker shares the process's output pipes, and waiting for the process waits
        # for them to close: the worker goes first
        if worker is not None and not gone(worker):
            os.kill(worker, signal.SIGKILL)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
                process.kill()
        await asyncio.wait_for(process.wait(), timeout=30)


async def test_two_processes_answer_on_one_port_and_stop_on_sigterm(database_url: str) -> None:
    async with two_processes(database_url) as (process, url, worker, held, listed):
        assert sum(held.values()) >= 2
        # /metrics sums both processes, whichever takes the scrape: each scrape on a new
        # connection (the kernel picks the process) counts every List answered
        metrics_dir = Path(environ_of(worker)["PROMETHEUS_MULTIPROC_DIR"])
        assert environ_of(process.pid)["PROMETHEUS_MULTIPROC_DIR"] == str(metrics_dir)
        counted = []
        for _ in range(8):
            async with aiohttp.ClientSession() as session:  # one connection each
                async with session.get(f"{url}/metrics") as response:
                    text = await response.text()
            counted.append(float(LISTED.search(text).group(1)))  # type: ignore[union-attr]
        assert counted == [listed] * 8

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        assert gone(worker)
        assert not await asyncio.to_thread(metrics_dir.exists)  # made and removed by the first


async def test_a_worker_that_dies_stops_the_others_and_fails_the_command(
    database_url: str,
) -> None:
    async with two_processes(database_url) as (process, _, worker, _, _):
        os.kill(worker, signal.SIGKILL)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 1
        assert f"mirror serve: worker {worker} exited with status -9: stopping" in stderr.decode()


async def test_a_worker_stops_when_its_first_process_is_killed(database_url: str) -> None:
    async with two_processes(database_url) as (process, _, worker, _, _):
        process.kill()  # SIGKILL: no chance to stop its workers
        await wait_until_gone(worker)
