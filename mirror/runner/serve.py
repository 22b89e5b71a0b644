"""``mirror serve``: the local API on its own (the index is filled by ``mirror ingest``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import click

from mirror.api.app import create_app
from mirror.api.bind import check_bind
from mirror.api.server import ApiRunner
from mirror.api.tls import server_ssl_context
from mirror.cli_options import (
    api_listen_options,
    async_command,
    database_options,
    grpc_port_option,
    insecure_option,
    load_settings,
)
from mirror.exit_codes import ExitCode
from mirror.grpc_api.server import GrpcListener, start_for_app
from mirror.heap import freeze_startup_heap
from mirror.listen import start_site
from mirror.runner import workers as pool_of
from mirror.settings import Secret
from mirror.signals import stop_on_signals
from mirror.store.database import database_dsn


@click.command("serve")
@api_listen_options
@insecure_option
@grpc_port_option
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes answering the HTTP API on the port, for more than one core's worth of "
    "requests (each with its own pool of up to 10 database connections and its own List "
    "page cache; gRPC is answered by the first; /metrics sums them all).",
)
@click.option("--worker-pipe", type=int, hidden=True)  # a worker started by --workers
@click.option(pool_of.OWNED_METRICS_DIR_FLAG, "owned_metrics_dir", is_flag=True, hidden=True)
@database_options
@async_command
async def serve_command(
    host: str,
    port: int,
    insecure: bool,
    workers: int,
    worker_pipe: int | None,
    owned_metrics_dir: bool,
) -> None:
    """Serve the local API: the upstream's List/Get/Delete, blobs, sync status, events, stats.

    The ImageService is also served over gRPC on --grpc-port (same host).

    Tokens come from MIRROR_API_TOKENS (token:role pairs, roles read and admin);
    without them only a loopback address is allowed unless --insecure is given.
    Runs until SIGINT or SIGTERM.
    """
    if workers > 1 and worker_pipe is None:
        pool_of.restart_with_metrics_dir(sys.argv)  # returns once the metrics are shared
    failed: str | None = None  # why the workers stopped, when one exited on its own
    async with contextlib.AsyncExitStack() as stack:
        if owned_metrics_dir:
            stack.callback(pool_of.remove_metrics_dir)  # the last thing done, whatever happens
        settings = load_settings()
        check_bind(settings, host, insecure)
        ssl_context = server_ssl_context(settings)
        shared = workers > 1 or worker_pipe is not None  # the port is shared (SO_REUSEPORT)
        dsn = None
        if workers > 1:
            # resolved once (the embedded server started here, if it is the one) for all
            dsn = await stack.enter_async_context(database_dsn(settings))
            settings = settings.with_(database_url=Secret(dsn))
        app = create_app(settings)
        runner = ApiRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()  # opens (and migrates) the database: a bad URL stops here, in one line
        stack.push_async_callback(runner.cleanup)
        stop = asyncio.Event()
        # Handlers first: a SIGTERM while the listeners start (a client may already
        # have seen the HTTP address) stops the server cleanly once they are up.
        with stop_on_signals(stop):
            url = await start_site(runner, host, port, ssl_context=ssl_context, reuse_port=shared)
            if worker_pipe is not None:
                freeze_startup_heap()
                orphaned = asyncio.create_task(pool_of.stop_when_orphaned(worker_pipe, stop))
                await stop.wait()
                orphaned.cancel()
                return
            click.echo(f"mirror serve: listening on {url}", err=True)
            grpc_listener = await start_for_app(app, host)
            started: list[pool_of.Worker] = []
            try:
                if grpc_listener is not None:
                    click.echo(f"mirror serve: gRPC API on {grpc_listener.address}", err=True)
                if dsn is not None:
                    bound_port = runner.addresses[0][1]
                    started = await pool_of.start_workers(
                        workers - 1, host, bound_port, settings, dsn, insecure=insecure
                    )
                    click.echo(f"mirror serve: {workers} processes answer on {url}", err=True)
                freeze_startup_heap()
                if started:
                    failed = await pool_of.supervise(started, stop)
                else:
                    await stop.wait()
            finally:
                await pool_of.stop_workers(started)
                await _stop_grpc(grpc_listener)
    if failed:
        click.echo(f"mirror serve: {failed}", err=True)
        sys.exit(ExitCode.FAILED)


async def _stop_grpc(listener: GrpcListener | None) -> None:
    if listener is not None:
        await listener.stop()
