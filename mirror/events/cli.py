"""`mirror relay` and `mirror events tail`."""

from __future__ import annotations

import asyncio
import sys

import click
import orjson

from mirror.cli_options import (
    async_command,
    database_options,
    kafka_bootstrap_option,
    load_settings,
    log_level_option,
    topic_prefix_option,
)
from mirror.settings import Settings
from mirror.signals import stop_on_signals

NO_KAFKA = (
    "MIRROR_KAFKA_BOOTSTRAP is not set (nor --kafka-bootstrap): events stay in PostgreSQL "
    "and are readable at /mirror/v1/events"
)


def _require_kafka(settings: Settings) -> str:
    if settings.kafka_bootstrap is None:
        click.echo(f"mirror: {NO_KAFKA}", err=True)
        sys.exit(2)
    return settings.kafka_bootstrap


@click.command("relay")
@click.option("--once", is_flag=True, help="Publish every pending event, then exit.")
@kafka_bootstrap_option
@topic_prefix_option
@click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Outbox rows per Kafka batch.",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.",
)
@database_options
@async_command
async def relay_command(
    once: bool,
    batch_size: int,
    metrics_port: int | None,
) -> None:
    """Publish pending change events from the outbox to Kafka (CloudEvents, at least once).

    One relay is active at a time; start more as standbys, they take over within
    seconds when the active one dies.
    """
    from mirror.errors import KafkaUnavailableError
    from mirror.events.relay import RelayOptions, run_relay
    from mirror.store.database import open_database

    settings = load_settings()
    _require_kafka(settings)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    stop = asyncio.Event()
    try:
        async with open_database(settings, max_size=2) as pool:
            with stop_on_signals(stop):
                result = await run_relay(
                    pool,
                    settings,
                    stop=stop,
                    once=once,
                    options=RelayOptions(batch_size=batch_size),
                )
    except KafkaUnavailableError as exc:
        click.echo(f"mirror: {exc}", err=True)
        sys.exit(1)
    if once:
        if result.was_active:
            click.echo(f"published {result.published} events", err=True)
        else:
            click.echo("another relay is active and publishes the outbox", err=True)


@click.group("events")
def events_group() -> None:
    """Change events on Kafka."""


@events_group.command("tail")
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Only this CloudEvent type or type prefix (repeatable), e.g. registry.image.deleted "
    "or registry.tag.*.",
)
@click.option(
    "--subject",
    default=None,
    help="Only events of this subject: an image id, a digest, or <repository>:<tag>.",
)
@click.option(
    "--group",
    default=None,
    help="Consumer group: resume where it left off, offsets committed after printing. Default: an ephemeral reader.",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    help="Start at the oldest event Kafka keeps (with --group: where the group has no offset yet).",
)
@kafka_bootstrap_option
@topic_prefix_option
@click.option(
    "--limit",
    default=None,
    type=click.IntRange(1),
    help="Exit after printing this many events.",
)
@log_level_option
@async_command
async def tail_command(
    types: tuple[str, ...],
    subject: str | None,
    group: str | None,
    from_beginning: bool,
    limit: int | None,
) -> None:
    """Print events as they arrive, one CloudEvent JSON object a line (duplicates dropped)."""
    from mirror.errors import KafkaUnavailableError
    from mirror.events.subscriber import EventSubscriber, ReceivedEvent

    settings = load_settings()
    bootstrap = _require_kafka(settings)
    stop = asyncio.Event()
    printed = 0

    async def emit(event: ReceivedEvent) -> None:
        nonlocal printed
        sys.stdout.buffer.write(orjson.dumps(event.to_json()) + b"\n")
        sys.stdout.buffer.flush()
        printed += 1
        if limit is not None and printed >= limit:
            stop.set()

    try:
        subscriber = EventSubscriber(
            bootstrap,
            group=group,
            types=types or None,
            subject=subject,
            topic_prefix=settings.kafka_topic_prefix,
            from_beginning=from_beginning,
            client_id="registry-mirror-tail",
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--type") from None
    try:
        async with subscriber:
            with stop_on_signals(stop):
                await subscriber.run(emit, stop=stop)
    except KafkaUnavailableError as exc:
        click.echo(f"mirror: {exc}", err=True)
        sys.exit(1)
    except BrokenPipeError:  # `mirror events tail | head`
        sys.exit(0)
