"""``mirror serve --workers N``: N processes answering the HTTP API on one port.

One Python process answers at most one core's worth of requests; on a machine
with cores to spare, more processes answer more. The first process (the one
started by the user) opens the database (starting the embedded server if that is
the one configured), applies the migrations, listens, answers, serves gRPC, and
starts the others: ``mirror serve --worker-pipe FD`` with the resolved database
URL in their environment (``MIRROR_DATABASE_URL``, never on a command line) and
gRPC off. Every process listens on the same port with ``SO_REUSEPORT``, so the
kernel spreads the connections over them; each has its own pool of database
connections and its own List page cache. The API keeps no state in a process
(page tokens are signed with a key in the database, Delete operations are rows),
so any of them answers any request.

Metrics: a process's metrics live in its memory, so each would answer
``/metrics`` with its own share. Before anything else the first process makes a
directory for prometheus_client's multiprocess mode and starts itself again
(``os.execv``, the same pid) with ``PROMETHEUS_MULTIPROC_DIR`` naming it, so that
its metrics, and those of the workers that inherit the variable, are kept in
files from their start and ``/metrics`` sums them (``mirror.api.metrics``). The
first process removes the directory when it stops (not one the user gave).

Workers run in their own session, so a Ctrl-C in a terminal reaches only the
first process, which stops them with SIGTERM and waits. A worker whose first
process is gone (even by SIGKILL) stops by itself: it holds the read end of a pipe
whose write end only the first process has, and sees it end. A worker that
exits on its own stops them all: the command fails (exit 1) rather than serve on
with part of its capacity, and its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

from mirror.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
OWNED_METRICS_DIR_FLAG = "--owned-metrics-dir"  # hidden: this process made the directory

Worker = asyncio.subprocess.Process


def worker_command(host: str, port: int, *, pipe: int, insecure: bool) -> list[str]:
    """The command line of one more worker listening on ``host:port``; ``pipe`` is the read
    end of a pipe whose write end only the first process holds (its end tells the worker
    that the first process is gone)."""
    command = [sys.executable, "-m", "mirror", "serve", "--host", host, "--port", str(port)]
    command += ["--worker-pipe", str(pipe)]
    return command + (["--insecure"] if insecure else [])


def worker_env(settings: Settings, dsn: str) -> dict[str, str]:
    """The environment of a worker: this process's, with what its flags and the embedded
    server resolved (the database URL, the log level) and gRPC off."""
    env = dict(os.environ)
    env["MIRROR_DATABASE_URL"] = dsn
    env["MIRROR_LOG_LEVEL"] = settings.log_level
    env["MIRROR_GRPC_PORT"] = "off"
    return env


async def start_workers(
    count: int, host: str, port: int, settings: Settings, dsn: str, *, insecure: bool
) -> list[Worker]:
    """Start ``count`` workers on ``host:port``, each in its own session (a terminal's
    Ctrl-C is the first process's to pass on)."""
    read_end, _write_end = os.pipe()  # the write end is not inherited: it closes with us
    command = worker_command(host, port, pipe=read_end, insecure=insecure)
    env = worker_env(settings, dsn)
    try:
        return [
            await asyncio.create_subprocess_exec(
                *command, env=env, pass_fds=(read_end,), start_new_session=True
            )
            for _ in range(count)
        ]
    finally:
        os.close(read_end)  # write_end stays open for as long as this process lives


async def stop_workers(workers: Sequence[Worker]) -> None:
    """SIGTERM every worker still running, then wait; one that does not stop in time is killed."""
    for worker in workers:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            await asyncio.wait_for(worker.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("worker %d did not stop in %.0f s: killed", worker.pid, STOP_TIMEOUT_S)
            worker.kill()
            await worker.wait()


async def supervise(workers: Sequence[Worker], stop: asyncio.Event) -> str | None:
    """Until ``stop`` or a worker's exit (the caller then stops them all with
    ``stop_workers``). Why the command failed (a worker exited), or None when it was
    asked to stop."""
    waits = {asyncio.ensure_future(w.wait()): w for w in workers}
    stopping = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({stopping, *waits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopping, *waits):
            task.cancel()
    failed = None
    exited = [waits[t] for t in done if t in waits]
    if exited and not stop.is_set():
        worker = exited[0]
        failed = f"worker {worker.pid} exited with status {worker.returncode}: stopping"
        log.error("%s", failed)
    return failed


async def stop_when_orphaned(pipe: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once the first process is gone: the pipe's write end closed with it, and
    its read end (``pipe``) reads as ended."""
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(pipe, gone.set)  # nothing is ever written: readable means ended
    try:
        await gone.wait()
    finally:
        loop.remove_reader(pipe)
    log.warning("the first mirror serve process is gone: stopping")
    stop.set()


def restart_with_metrics_dir(argv: Sequence[str]) -> None:
    """Start this ``mirror serve`` again (same pid) with a fresh multiprocess metrics
    directory, unless one is set already; returns only then. ``argv`` is the command's
    (``sys.argv``), which must run ``serve``."""
    if os.environ.get(METRICS_DIR):
        return
    if list(argv[1:2]) != ["serve"]:
        log.warning("mirror serve not started from its command line: /metrics per process")
        return
    directory = tempfile.mkdtemp(prefix="mirror-serve-metrics-")
    os.environ[METRICS_DIR] = directory
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "mirror", *argv[1:], OWNED_METRICS_DIR_FLAG])


def remove_metrics_dir() -> None:
    """Remove the multiprocess metrics directory this process made."""
    directory = os.environ.get(METRICS_DIR)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
