"""The `mirror` command: wiring only. Each subcommand lives with the package it drives
and is imported only when used, so `mirror --help` stays fast."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from mirror.cli_options import async_command, database_options, load_settings

# name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "demo": "mirror.runner.cli:demo_command",
    "serve": "mirror.runner.serve:serve_command",
    "ingest": "mirror.ingest.cli:ingest_command",
    "relay": "mirror.events.cli:relay_command",
    "run": "mirror.runner.cli:run_command",
    "simulate": "mirror.upstream.simulator.cli:simulate_command",
    "stats": "mirror.stats.cli:stats_command",
    "events": "mirror.events.cli:events_group",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in self.lazy if self._available(name)] + sorted(
            super().list_commands(ctx)
        )

    def _available(self, name: str) -> bool:
        module_name = self.lazy[name].split(":")[0]
        try:
            return importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            return False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and self._available(cmd_name):
            module_name, attr = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup, lazy=SUBCOMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="registry-mirror", prog_name="mirror")
def main() -> None:
    """registry-mirror: a local mirror and index of a cloud Container Registry.

    Mirrors the ImageService List API into PostgreSQL, answers List/Get/Delete
    locally in milliseconds, publishes every change as a CloudEvent on Kafka,
    and tells how many bytes shared layers really save.
    """


@main.group("db")
def db_group() -> None:
    """The index database."""


@db_group.command("upgrade")
@database_options
@async_command
async def db_upgrade() -> None:
    """Apply pending SQL migrations from sql/ (serve, ingest and run also do this at start)."""
    from mirror.store.database import open_database
    from mirror.store.migrate import apply_migrations

    settings = load_settings()
    async with open_database(settings, migrate=False) as pool, pool.acquire() as conn:
        applied = await apply_migrations(conn)
    if applied:
        for migration in applied:
            click.echo(f"applied {migration.name}")
    else:
        click.echo("the database is up to date")
