"""`mirror ingest`: walk the upstream List API for every configured scope into the index."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import aiohttp
import asyncpg
import click
import orjson

from mirror.cli_options import (
    async_command,
    database_options,
    interval_option,
    load_settings,
    require_scopes,
    scope_option,
    upstream_url_option,
)
from mirror.dsn import DsnParts
from mirror.exit_codes import ExitCode
from mirror.heap import tune_for_ingest
from mirror.ingest.loop import DEFAULT_INTERVAL_S, ingest_once, run_ingest_loop, upkeep_after
from mirror.ingest.progress import WalkProgress, progress_for
from mirror.ingest.summary import IngestSummary, WalkStatus
from mirror.settings import Settings
from mirror.signals import stop_on_signals
from mirror.stats.folder import fold_to_end, run_folder
from mirror.store.database import open_database
from mirror.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


def upstream_session(settings: Settings) -> aiohttp.ClientSession:
    """The HTTP session for the upstream client (its owner closes it)."""
    connector = aiohttp.TCPConnector(limit=max(4, settings.upstream_concurrency * 2))
    return aiohttp.ClientSession(connector=connector, raise_for_status=False)


def _print_summary(summary: IngestSummary, as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(summary.to_json()).decode())
        return
    for r in summary.scopes:
        line = (
            f"{r.scope}: {r.status.value}, {r.pages} page(s), {r.images} image(s), "
            f"{r.created} created, {r.updated} updated, {r.deleted} deleted"
        )
        if r.anomalies:
            line += f", {r.anomalies} paging anomal{'y' if r.anomalies == 1 else 'ies'}"
        if r.unchecked:
            line += f", {r.unchecked} deletion candidate(s) left for the next pass"
        if r.error:
            line += f" — {r.error}"
        click.echo(line)
    rate = summary.images / summary.seconds if summary.seconds else 0.0
    click.echo(
        f"total: {summary.images} image(s) in {summary.seconds:.1f}s ({rate:,.0f} images/s), "
        f"{summary.errors} error(s)"
    )


async def _fold_to_end(pool: asyncpg.Pool) -> None:
    """Fold the stats to the end; if the database fails now, the next folder will."""
    try:
        await fold_to_end(pool)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("could not fold the dedup stats to the end: %s", exc)


async def _stop_folder(folder: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Let the folder finish its pass (a pass is one transaction) and end."""
    stop.set()
    await asyncio.gather(folder, return_exceptions=True)


_WHY = {
    WalkStatus.SKIPPED: "its lease is held by another ingest process",
    WalkStatus.CANCELLED: "stopped by a signal",
}


def _not_walked_line(summary: IngestSummary, settings: Settings) -> str:
    """One line for stderr saying why `--once` exits non-zero."""
    if summary.database_error is not None:
        where = (
            DsnParts.parse(settings.database_url.reveal()).describe()
            if settings.database_url is not None
            else f"embedded in {settings.data_dir}"
        )
        return (
            f"mirror: database unavailable: PostgreSQL at {where} stopped answering during "
            f"the pass ({summary.database_error}); not every scope was walked"
        )
    missed = [
        f"{r.scope} {r.status.value} ({r.error or _WHY.get(r.status, 'not walked')})"
        for r in summary.scopes
        if r.status is not WalkStatus.COMPLETE
    ]
    return f"mirror: not every scope was walked: {'; '.join(missed)}"


@click.command("ingest")
@click.option("--once", is_flag=True, help="One complete pass over every scope, then exit.")
@interval_option(DEFAULT_INTERVAL_S)
@click.option("--json", "as_json", is_flag=True, help="Print each pass's summary as one JSON line.")
@scope_option
@upstream_url_option
@click.option(
    "--delete-guard",
    default=None,
    metavar="SHARE",
    help="A walk listing less than this share of the indexed scope deletes nothing (0: off)."
    "  [env MIRROR_DELETE_GUARD; default 0.5]",
)
@database_options
@async_command
async def ingest_command(
    once: bool,
    interval: float,
    as_json: bool,
    delete_guard: str | None,
) -> None:
    """Walk the upstream List API for every configured scope into the index.

    Changes are written with their events in the same transaction; an image is
    deleted only after a complete walk missed it and the upstream confirmed it
    gone. SIGTERM finishes the current page and exits cleanly.

    With --once, exits 0 only when every scope was walked completely; otherwise
    it prints the summary and one line saying why, and exits 1 (a walk failed),
    3 (the database went away), 4 (a scope's lease is held by another ingest
    process) or 5 (stopped by a signal); 2 is a configuration error
    (docs/INGEST.md, "Exit codes").
    """
    settings = load_settings(delete_guard=delete_guard)
    require_scopes(settings, "ingest")
    tune_for_ingest()
    stop = asyncio.Event()
    outcome: IngestSummary | None = None
    terminal = progress_for(sys.stderr)
    with stop_on_signals(stop), terminal or contextlib.nullcontext():
        progress: WalkProgress | None = terminal
        async with open_database(settings) as pool, upstream_session(settings) as session:
            client = UpstreamClient(session, settings)
            # the dedup stats are folded beside the walks (mirror/stats/folder.py)
            folder_stop = asyncio.Event()
            folder = asyncio.create_task(run_folder(pool, folder_stop), name="stats folder")
            try:
                if once:
                    summary = await ingest_once(
                        pool,
                        client,
                        settings.scopes,
                        stop=stop,
                        progress=progress,
                        delete_guard=settings.delete_guard,
                        confirm_max=settings.delete_confirm_max,
                    )
                    # `mirror stats` right after --once is exact
                    if summary.database_error is None:
                        await _stop_folder(folder, folder_stop)
                        await _fold_to_end(pool)
                        await upkeep_after(pool, summary, settings)
                    _print_summary(summary, as_json)
                    outcome = summary
                else:

                    async def on_pass(summary: IngestSummary) -> None:
                        _print_summary(summary, as_json)
                        await upkeep_after(pool, summary, settings)

                    await run_ingest_loop(
                        pool,
                        client,
                        settings,
                        interval=interval,
                        stop=stop,
                        progress=progress,
                        on_pass=on_pass,
                    )
            finally:
                await _stop_folder(folder, folder_stop)
    if outcome is not None and outcome.exit_code is not ExitCode.OK:
        click.echo(_not_walked_line(outcome, settings), err=True)
        sys.exit(outcome.exit_code)
