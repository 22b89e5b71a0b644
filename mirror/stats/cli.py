"""`mirror stats`: the dedup statistics in the terminal (or as JSON)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import asyncpg
import click
import orjson
from rich.console import Console
from rich.table import Table

from mirror.cli_options import database_options, load_settings, run_async
from mirror.errors import ConfigError, IndexUnavailable, NotFound
from mirror.model import Scope, ScopeKind
from mirror.settings import Settings, default_data_dir, default_demo_data_dir
from mirror.stats.figures import DedupStats, Freshness, LayerReport, scope_label
from mirror.stats.queries import fetch_layer_report, fetch_scopes, fetch_stats, scope_known
from mirror.store.embedded import EmbeddedPostgres
from mirror.store.existing import open_existing_index

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units, as registries and docker report sizes)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


async def gather_report(
    conn: asyncpg.Connection, scopes: Sequence[Scope], top: int
) -> tuple[list[DedupStats], LayerReport]:
    """The stats of the asked scopes (default: the whole index, then each folder and
    registry), and the top layers."""
    if scopes:
        wanted: list[Scope | None] = list(scopes)
    else:
        wanted = [None]
        wanted += await fetch_scopes(conn, ScopeKind.FOLDER)
        wanted += await fetch_scopes(conn, ScopeKind.REGISTRY)
    stats = [await fetch_stats(conn, scope) for scope in wanted]
    report = await fetch_layer_report(conn, limit=top, reclaimable_limit=top)
    return stats, report


def report_json(stats: Sequence[DedupStats], report: LayerReport) -> dict[str, Any]:
    """The scopes' figures, the top layers, and (once, at the top) where they stand."""
    return {"scopes": [s.to_json(with_freshness=False) for s in stats], **report.to_json()}


def render(console: Console, stats: Sequence[DedupStats], report: LayerReport) -> None:
    table = Table(title="Dedup statistics", title_justify="left")
    table.add_column("scope", no_wrap=True)
    for column in (
        "images",
        "blobs",
        "logical",
        "stored",
        "saved",
        "ratio",
        "compressed",
        "reclaimable (bytes / blobs)",
    ):
        table.add_column(column, justify="right")
    for s in stats:
        table.add_row(
            scope_label(s.scope),
            f"{s.images:,}",
            f"{s.blobs:,}",
            human_bytes(s.logical_bytes),
            human_bytes(s.stored_bytes),
            human_bytes(s.saved_bytes),
            f"{s.dedup_ratio:.2f}x",
            human_bytes(s.compressed_bytes),
            f"{human_bytes(s.reclaimable_bytes)} / {s.reclaimable_blobs:,}",
        )
    console.print(table)

    layers = Table(
        title="Top shared layers (whole index, most bytes saved first)", title_justify="left"
    )
    for column, justify in (
        ("digest", "left"),
        ("size", "right"),
        ("refs", "right"),
        ("repositories", "right"),
        ("saved", "right"),
    ):
        layers.add_column(column, justify=justify)  # type: ignore[arg-type]
    for layer in report.layers:
        layers.add_row(
            _short(layer.digest),
            human_bytes(layer.size),
            f"{layer.ref_count:,}",
            f"{layer.repository_count:,}",
            human_bytes(layer.saved_bytes),
        )
    if report.layers:
        console.print(layers)
    else:
        console.print("No layer is shared yet.")

    console.print(
        f"Reclaimable (no image references them): {report.reclaimable_blobs:,} blob(s), "
        f"{human_bytes(report.reclaimable_bytes)}"
    )
    for blob in report.reclaimable:
        console.print(f"  {_short(blob.digest)}  {human_bytes(blob.size):>10}  {blob.orphaned_at}")
    if report.freshness is not None:
        console.print(freshness_line(report.freshness))


def freshness_line(freshness: Freshness) -> str:
    """Where the figures stand: 'Exact as of event 42 (2026-...Z); 0 change(s) behind'."""
    line = f"Exact as of event {freshness.event_id} ({freshness.time}); "
    if not freshness.pending_changes:
        return line + "nothing behind."
    return (
        line + f"{freshness.pending_changes:,} change(s) behind, the oldest "
        f"{freshness.lag_seconds:.1f}s old (folded by a running `mirror ingest` or `mirror run`)."
    )


def _short(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}:{hexdigest[:16]}…" if len(hexdigest) > 16 else digest


def _parse_scopes(values: Sequence[str]) -> list[Scope]:
    """The --scope values; a bad one exits 2 with one line, as every setting does."""
    try:
        return [Scope.parse(v) for v in values]
    except ConfigError as exc:
        click.echo(f"mirror: configuration error: --scope: {exc}", err=True)
        sys.exit(2)


async def _read(
    settings: Settings, scopes: Sequence[Scope], top: int
) -> tuple[list[DedupStats], LayerReport]:
    async with open_existing_index(settings) as pool, pool.acquire() as conn:
        for scope in scopes:
            if not await scope_known(conn, scope):
                raise NotFound(
                    f"{scope_label(scope)} is not in the index (no image of it was mirrored)"
                )
        return await gather_report(conn, scopes, top)


def _no_index_hint(settings: Settings) -> str:
    """Where to look instead, when the default data dir holds no index but the demo's does."""
    demo = default_demo_data_dir()
    if (
        settings.embedded_database
        and settings.data_dir == default_data_dir()
        and (EmbeddedPostgres(demo).pgdata / "PG_VERSION").exists()
    ):
        return f"; the demo's index is in {demo}: add --data-dir {demo}"
    return "; pass --data-dir DIR or --database-url DSN"


@click.command("stats")
@click.option(
    "--scope",
    "scope_texts",
    multiple=True,
    metavar="KIND:ID",
    help="folder:ID, registry:ID or repository:NAME (repeatable). Default: the whole index, "
    "then every folder and registry.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="How many top layers and reclaimable blobs to show.",
)
@database_options
def stats_command(
    scope_texts: tuple[str, ...],
    as_json: bool,
    top: int,
) -> None:
    """Dedup statistics: logical vs stored bytes, savings, top shared layers, reclaimable blobs.

    Shared layers are counted once, by digest (never by blob id). It only reads:
    an empty data dir, a database without the mirror's schema or one whose schema
    is behind (`mirror db upgrade`) is said so, never created or migrated.
    """
    scopes = _parse_scopes(scope_texts)
    settings = load_settings()
    try:
        stats, report = run_async(_read(settings, scopes, top))
    except IndexUnavailable as exc:
        click.echo(f"mirror: {exc}{_no_index_hint(settings) if exc.missing else ''}", err=True)
        sys.exit(1)
    except NotFound as exc:
        click.echo(f"mirror: not found: {exc.message}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(orjson.dumps(report_json(stats, report)).decode())
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)  # a pipe or a file: do not squeeze the tables
        render(console, stats, report)
