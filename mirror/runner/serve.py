"""``mirror serve``: the local API on its own (the index is filled by ``mirror ingest``)."""

from __future__ import annotations

import asyncio

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
from mirror.grpc_api.server import start_for_app
from mirror.heap import freeze_startup_heap
from mirror.listen import start_site
from mirror.signals import stop_on_signals


@click.command("serve")
@api_listen_options
@insecure_option
@grpc_port_option
@database_options
@async_command
async def serve_command(
    host: str,
    port: int,
    insecure: bool,
) -> None:
    """Serve the local API: the upstream's List/Get/Delete, blobs, sync status, events, stats.

    The ImageService is also served over gRPC on --grpc-port (same host).

    Tokens come from MIRROR_API_TOKENS (token:role pairs, roles read and admin);
    without them only a loopback address is allowed unless --insecure is given.
    Runs until SIGINT or SIGTERM.
    """
    settings = load_settings()
    check_bind(settings, host, insecure)
    ssl_context = server_ssl_context(settings)
    app = create_app(settings)
    runner = ApiRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()  # opens (and migrates) the database: a bad URL stops here, in one line
    stop = asyncio.Event()
    try:
        # Handlers first: a SIGTERM while the listeners start (a client may already
        # have seen the HTTP address) stops the server cleanly once they are up.
        with stop_on_signals(stop):
            url = await start_site(runner, host, port, ssl_context=ssl_context)
            click.echo(f"mirror serve: listening on {url}", err=True)
            grpc_listener = await start_for_app(app, host)
            freeze_startup_heap()
            try:
                if grpc_listener is not None:
                    click.echo(f"mirror serve: gRPC API on {grpc_listener.address}", err=True)
                await stop.wait()
            finally:
                if grpc_listener is not None:
                    await grpc_listener.stop()
    finally:
        await runner.cleanup()
