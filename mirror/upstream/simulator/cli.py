"""``mirror simulate``: the upstream simulator as a server."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from mirror.errors import ConfigError
from mirror.exit_codes import ExitCode
from mirror.model import Scope, ScopeKind
from mirror.signals import run_main, stop_on_signals
from mirror.upstream.simulator.config import PageTokenStyle, SimulatorConfig
from mirror.upstream.simulator.runtime import Simulator
from mirror.upstream.simulator.server import start_simulator

DEFAULT_PORT = 9090
F = TypeVar("F", bound=Callable[..., Any])


def _rate(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1")
    return value


# The simulated registry's flags, shared with `mirror demo`.
seed_option = click.option(
    "--seed", default=1, show_default=True, type=int, help="Same seed, same registry."
)


def images_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--images",
        default=default,
        show_default=True,
        type=click.IntRange(1, 10_000_000),
        help="Images in the simulated registry (a million are ready in about a second).",
    )


def churn_option(default: float) -> Callable[[F], F]:
    return click.option(
        "--churn",
        default=default,
        show_default=True,
        type=click.FloatRange(0),
        help="Simulated upstream changes a second (pushes 40%, tag moves 35%, deletions 25%); "
        "0 for none.",
    )


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port (0: any free one)."
)
@click.option(
    "--grpc-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Also serve ImageService and OperationService over gRPC on this port (0: any free one; "
    "faults and --token apply to REST only).",
)
@images_option(10_000)
@seed_option
@click.option("--folders", default=2, show_default=True, type=click.IntRange(1, 1000))
@click.option("--registries-per-folder", default=2, show_default=True, type=click.IntRange(1, 1000))
@churn_option(0.0)
@click.option(
    "--latency-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Mean added latency per request (log-normal).",
)
@click.option(
    "--latency-sigma", default=0.5, show_default=True, type=click.FloatRange(0), help="Its spread."
)
@click.option(
    "--error-rate",
    default=0.0,
    show_default=True,
    callback=_rate,
    type=float,
    help="Share of 500/503 answers.",
)
@click.option(
    "--throttle-rate",
    default=0.0,
    show_default=True,
    callback=_rate,
    type=float,
    help="Share of 429 answers (with Retry-After).",
)
@click.option(
    "--retry-after",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Retry-After seconds.",
)
@click.option(
    "--drop-rate",
    default=0.0,
    show_default=True,
    callback=_rate,
    type=float,
    help="Share of dropped connections.",
)
@click.option(
    "--token",
    default=None,
    envvar="MIRROR_SIMULATOR_TOKEN",
    help="Require 'Authorization: Bearer TOKEN' (missing: 401, wrong: 403).  [env MIRROR_SIMULATOR_TOKEN]",
)
@click.option(
    "--page-token-style",
    type=click.Choice([s.value for s in PageTokenStyle]),
    default=PageTokenStyle.OFFSET.value,
    show_default=True,
    help="offset: pages shift when images are deleted mid-walk; cursor: keyset, stable.",
)
@click.option(
    "--operation-delay",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds until a Delete operation is done.",
)
@click.option(
    "--fault-seed", default=None, type=int, help="Seed the fault draws (reproducible faults)."
)
def simulate_command(
    host: str,
    port: int,
    grpc_port: int | None,
    images: int,
    seed: int,
    folders: int,
    registries_per_folder: int,
    churn: float,
    latency_ms: float,
    latency_sigma: float,
    error_rate: float,
    throttle_rate: float,
    retry_after: float,
    drop_rate: float,
    token: str | None,
    page_token_style: str,
    operation_delay: float,
    fault_seed: int | None,
) -> None:
    """Serve a faithful fake of the cloud ImageService REST API over a generated registry.

    The same paths, parameters, JSON and errors as the cloud (List, Get, Delete
    and the Operation service) on one port, plus an admin API under /_simulator
    to push, re-tag and delete images and to switch faults at run time.
    See docs/SIMULATOR.md.
    """
    try:
        config = SimulatorConfig(
            images=images,
            seed=seed,
            folders=folders,
            registries_per_folder=registries_per_folder,
            churn=churn,
            latency_ms=latency_ms,
            latency_sigma=latency_sigma,
            error_rate=error_rate,
            throttle_rate=throttle_rate,
            retry_after=retry_after,
            drop_rate=drop_rate,
            token=token,
            page_token_style=PageTokenStyle(page_token_style),
            operation_delay=operation_delay,
            fault_seed=fault_seed,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_main(_serve(config, host, port, grpc_port))


async def _serve(config: SimulatorConfig, host: str, port: int, grpc_port: int | None) -> None:
    started = time.perf_counter()
    simulator = Simulator.from_config(config)
    ready = time.perf_counter() - started
    try:
        running = await start_simulator(
            host=host, port=port, simulator=simulator, grpc_port=grpc_port
        )
    except ConfigError as exc:  # the HTTP port
        click.echo(f"mirror simulate: {exc}", err=True)
        sys.exit(ExitCode.CONFIG)
    except (OSError, RuntimeError) as exc:  # the gRPC port
        reason = exc.strerror if isinstance(exc, OSError) else exc
        click.echo(f"mirror simulate: --grpc-port {grpc_port}: cannot listen: {reason}", err=True)
        sys.exit(ExitCode.CONFIG)
    _print_banner(running.url, simulator, ready)
    if running.grpc_address:
        click.echo(f"  gRPC API:    {running.grpc_address} (ImageService, OperationService)")
    stop = asyncio.Event()
    try:
        with stop_on_signals(stop):
            await stop.wait()
    finally:
        await running.close()
        click.echo("simulator stopped", err=True)


def _print_banner(url: str, simulator: Simulator, ready_s: float) -> None:
    config, registry = simulator.config, simulator.registry
    model = registry.model
    echo = click.echo
    echo(
        f"registry simulator: {config.images:,} images, {model.repository_count:,} repositories, "
        f"{len(model.registry_ids)} registries in {len(model.folder_ids)} folders "
        f"(seed {config.seed}), ready in {ready_s:.2f} s"
    )
    echo(f"  images API:  {url}/container-registry/v1/images")
    echo(f"  operations:  {url}/operations/{{operationId}}")
    echo(f"  admin API:   {url}/_simulator/state")
    for folder, folder_id in enumerate(model.folder_ids[:20]):
        registries = ", ".join(model.registry_ids[r] for r in model.folder_registries(folder))
        count = registry.count(Scope(ScopeKind.FOLDER, folder_id))
        echo(f"  folder {folder_id}: {count:,} images; registries {registries}")
    if len(model.folder_ids) > 20:
        echo(f"  ... and {len(model.folder_ids) - 20} more folders (GET /_simulator/state)")
    faults = simulator.faults
    extras = [f"page tokens: {faults.page_token_style.value}"]
    if config.churn:
        extras.append(f"churn {config.churn:g}/s")
    if faults.latency_ms:
        extras.append(f"latency ~{faults.latency_ms:g} ms")
    for name, rate in (
        ("errors", faults.error_rate),
        ("429s", faults.throttle_rate),
        ("drops", faults.drop_rate),
    ):
        if rate:
            extras.append(f"{name} {rate:.1%}")
    if faults.token:
        extras.append("bearer token required")
    echo("  " + ", ".join(extras))
    scopes = ",".join(f"folder:{f}" for f in model.folder_ids[:20])
    echo(
        f"  mirror it:   MIRROR_UPSTREAM_URL={url} MIRROR_OPERATION_URL={url} MIRROR_SCOPES={scopes}"
    )
    echo(
        f"  try:         curl '{url}/container-registry/v1/images?folderId={model.folder_ids[0]}&pageSize=2'"
    )
    sys.stdout.flush()
