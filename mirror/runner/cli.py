"""``mirror demo`` and ``mirror run``: the whole mirror in one process."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mirror.cli_options import (
    api_listen_options,
    async_command,
    configure_logging,
    database_options,
    grpc_port_option,
    insecure_option,
    interval_option,
    kafka_bootstrap_option,
    load_settings,
    log_level_option,
    require_scopes,
    scope_option,
    settings_flags,
    upstream_url_option,
)
from mirror.errors import BackgroundTaskFailed, ConfigError, DataDirBusy
from mirror.exit_codes import ExitCode
from mirror.runner.app import Mirror, RunOptions, run_until_stopped
from mirror.upstream.simulator.cli import churn_option, images_option, seed_option

DEFAULT_RUN_INTERVAL = 60.0
DEFAULT_DEMO_INTERVAL = 10.0


def _fail(exc: BaseException) -> None:
    """One line on stderr and exit 1 (configuration errors exit 2 through ``run_async``)."""
    cause = exc.__cause__
    detail = f": {cause!r}" if cause is not None else ""
    click.echo(f"mirror: {exc}{detail}", err=True)
    sys.exit(1)


@click.command("demo")
@images_option(50_000)
@seed_option
@churn_option(2.0)
@api_listen_options
@grpc_port_option
@interval_option(DEFAULT_DEMO_INTERVAL)
@click.option(
    "--data-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo's embedded PostgreSQL lives.  [default: a per-user 'registry-mirror-demo' dir, apart from real data]",
)
@click.option(
    "--database-url",
    default=None,
    help="Use this PostgreSQL instead of the embedded one (MIRROR_DATABASE_URL is ignored by the demo).",
)
@log_level_option
@click.option(
    "--reset",
    is_flag=True,
    help="Remove the demo's index (and its data dir when nothing else is in it), then exit.",
)
@async_command
async def demo_command(
    images: int,
    seed: int,
    churn: float,
    host: str,
    port: int,
    interval: float,
    data_dir: Path | None,
    database_url: str | None,
    reset: bool,
) -> None:
    """The main job on embedded defaults: simulate a registry, mirror it, serve it, until Ctrl-C.

    Starts an embedded PostgreSQL in its own data dir, the upstream simulator
    in-process with a gentle churn, the ingest loop over the simulator's
    folders, the relay (when MIRROR_KAFKA_BOOTSTRAP is set; otherwise events
    stay readable at /mirror/v1/events) and the API with the storage dashboard.
    Prints the URLs, the first dedup summary and commands to try. Real data is
    never touched: MIRROR_DATABASE_URL, MIRROR_DATA_DIR, the upstream, credential,
    scope and API-token settings are ignored.
    """
    from mirror.runner.demo import DemoOptions, demo_settings, run_demo

    if reset:
        from mirror.runner.demo_reset import reset_demo_data
        from mirror.settings import default_demo_data_dir

        if database_url is not None:
            click.echo(
                "mirror: --reset removes an embedded data dir, not --database-url's", err=True
            )
            sys.exit(2)
        try:
            click.echo(f"mirror demo: {reset_demo_data(data_dir or default_demo_data_dir())}")
        except ConfigError as exc:
            click.echo(f"mirror: {exc}", err=True)
            sys.exit(1)
        except DataDirBusy as exc:
            click.echo(f"mirror: {exc}", err=True)
            sys.exit(ExitCode.HELD_ELSEWHERE)
        return
    try:
        settings = demo_settings(data_dir=data_dir, database_url=database_url, **settings_flags())
    except ConfigError as exc:
        click.echo(f"mirror: configuration error: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings.log_level)
    options = DemoOptions(
        images=images,
        seed=seed,
        churn=churn,
        run=RunOptions(host=host, port=port, interval=interval),
    )
    try:
        await run_demo(settings, options)
    except BackgroundTaskFailed as exc:
        _fail(exc)


@click.command("run")
@api_listen_options
@grpc_port_option
@insecure_option
@interval_option(DEFAULT_RUN_INTERVAL)
@scope_option
@upstream_url_option
@kafka_bootstrap_option
@database_options
@async_command
async def run_command(
    host: str,
    port: int,
    insecure: bool,
    interval: float,
) -> None:
    """Ingest loop + relay + API in one process, configured for the real upstream.

    Walks every scope (MIRROR_SCOPES) every --interval seconds with the
    configured credentials (MIRROR_UPSTREAM_TOKEN, _TOKEN_FILE or _SA_KEY_FILE),
    publishes change events to Kafka when MIRROR_KAFKA_BOOTSTRAP is set, and
    serves the local API and dashboard. SIGTERM or Ctrl-C stops it all cleanly;
    a second Ctrl-C stops at once.
    """
    settings = load_settings()
    require_scopes(settings, "mirror")
    options = RunOptions(host=host, port=port, insecure=insecure, interval=interval)

    async def started(mirror: Mirror) -> None:
        click.echo(
            f"mirror running: API and dashboard at {mirror.api_url}/ (Ctrl-C to stop)", err=True
        )
        if mirror.grpc_address:
            click.echo(f"mirror running: gRPC API at {mirror.grpc_address}", err=True)

    try:
        await run_until_stopped(settings, options, on_started=started)
    except BackgroundTaskFailed as exc:
        _fail(exc)
