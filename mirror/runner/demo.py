"""``mirror demo``: the whole mirror against an in-process simulator, on embedded defaults.

The demo never touches real data: it ignores the environment's database, data
dir, upstream, credentials, scopes and API tokens, keeps its embedded
PostgreSQL in its own data dir (``default_demo_data_dir``), and mirrors the
simulator's folders. Kafka settings are honoured (events then also go to Kafka).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

import asyncpg

from mirror.ingest.progress import NullProgress, TerminalProgress, WalkProgress
from mirror.ingest.summary import IngestSummary, WalkStatus
from mirror.model import Scope, ScopeKind
from mirror.runner.app import IngestHooks, Mirror, RunOptions, owning_data_dir, start_mirror
from mirror.settings import Settings, default_demo_data_dir
from mirror.signals import Signalled, stop_on_signals
from mirror.stats.figures import DedupStats, LayerReport
from mirror.stats.folder import fold_to_end
from mirror.stats.queries import fetch_layer_report, fetch_stats
from mirror.upstream.simulator import RunningSimulator, SimulatorConfig, start_simulator

log = logging.getLogger(__name__)

# The environment variables the demo ignores: they describe real data and a real upstream.
IGNORED_ENV = frozenset(
    {
        "MIRROR_DATABASE_URL",
        "MIRROR_DATA_DIR",
        "MIRROR_UPSTREAM_URL",
        "MIRROR_OPERATION_URL",
        "MIRROR_IAM_URL",
        "MIRROR_UPSTREAM_TOKEN",
        "MIRROR_UPSTREAM_TOKEN_FILE",
        "MIRROR_UPSTREAM_SA_KEY_FILE",
        "MIRROR_SCOPES",
        "MIRROR_API_TOKENS",
    }
)
DEMO_FOLDERS = 2
DEMO_REGISTRIES_PER_FOLDER = 3
# The simulator answers at memory speed: a higher rate limit than a real cloud's lets
# the first mirror show what the ingest can do.
DEMO_UPSTREAM_RPS = 2000.0
DEMO_UPSTREAM_CONCURRENCY = 8
# The demo prints its own short lines; the components' INFO logs would drown them.
DEMO_LOG_LEVEL = "WARNING"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    images: int = 50_000
    seed: int = 1
    churn: float = 2.0  # simulated upstream changes a second
    run: RunOptions = field(default_factory=lambda: RunOptions(interval=10.0))


def demo_settings(
    env: Mapping[str, str] | None = None,
    *,
    data_dir: Path | None = None,
    database_url: str | None = None,
    log_level: str | None = None,
    grpc_port: str | None = None,
) -> Settings:
    """Settings from the environment minus what describes real data (see ``IGNORED_ENV``)."""
    env = os.environ if env is None else env
    kept = {name: value for name, value in env.items() if name not in IGNORED_ENV}
    if log_level is None and not kept.get("MIRROR_LOG_LEVEL", "").strip():
        log_level = DEMO_LOG_LEVEL
    return Settings.load(
        kept,
        data_dir=data_dir or default_demo_data_dir(),
        database_url=database_url,
        log_level=log_level,
        grpc_port=grpc_port,
        upstream_rps=DEMO_UPSTREAM_RPS,
        upstream_concurrency=DEMO_UPSTREAM_CONCURRENCY,
    )


async def run_demo(settings: Settings, options: DemoOptions, out: IO[str] = sys.stdout) -> None:
    """Start the simulator and the mirror, welcome the user, run until a signal.

    A data dir another mirror owns stops the demo before it prints anything.
    """
    stop = asyncio.Event()
    say = _Printer(out)
    with owning_data_dir(settings, "mirror demo"), stop_on_signals(stop) as signalled:
        say(
            f"registry-mirror demo: simulating {options.images:,} images "
            f"(seed {options.seed}, churn {options.churn:g} changes/s)"
        )
        simulator = await start_simulator(
            SimulatorConfig(
                images=options.images,
                seed=options.seed,
                folders=DEMO_FOLDERS,
                registries_per_folder=DEMO_REGISTRIES_PER_FOLDER,
                churn=options.churn,
            )
        )
        started = asyncio.Event()  # set once the mirror is up
        try:
            await _mirror_simulator(
                settings, options, simulator, _Stop(stop, signalled), say, started
            )
        finally:
            await simulator.close()
            if started.is_set():  # a mirror that never started (a busy port): nothing to report
                say(stopped_line(settings))


def stopped_line(settings: Settings) -> str:
    """What is down now, truthfully: the embedded server may live on for other processes."""
    if not settings.embedded_database:
        return (
            "demo stopped: simulator and mirror are down (--database-url's PostgreSQL is untouched)"
        )
    if (settings.data_dir / "pgdata" / "postmaster.pid").exists():
        return (
            "demo stopped: simulator and mirror are down; the embedded PostgreSQL keeps "
            "running for the other processes using it"
        )
    return "demo stopped: simulator, mirror and embedded PostgreSQL are down"


async def _mirror_simulator(
    settings: Settings,
    options: DemoOptions,
    simulator: RunningSimulator,
    stopping: _Stop,
    say: _Printer,
    started: asyncio.Event,
) -> None:
    stop = stopping.event
    model = simulator.registry.model
    scopes = tuple(Scope(ScopeKind.FOLDER, folder_id) for folder_id in model.folder_ids)
    settings = settings.with_(
        upstream_url=simulator.url, operation_url=simulator.url, scopes=scopes
    )
    say(
        f"  simulator:   {simulator.url} ({len(model.registry_ids)} registries, {len(scopes)} folders)"
    )
    if settings.embedded_database:
        say(f"  PostgreSQL:  embedded, in {settings.data_dir}")
    welcome = _Welcome(say, options.run.interval, stopping)
    async with start_mirror(settings, options.run, stop, hooks=welcome.hooks()) as mirror:
        started.set()
        welcome.mirror = mirror
        say(f"  dashboard:   {mirror.api_url}/")
        say(f"  API:         {mirror.api_url}/container-registry/v1/images")
        if mirror.grpc_address:
            say(
                f"  gRPC API:    {mirror.grpc_address} (yandex.cloud.containerregistry.v1.ImageService)"
            )
        if settings.kafka_bootstrap:
            say(
                f"  Kafka:       {settings.kafka_bootstrap}, topics "
                f"{settings.kafka_topic_prefix}.images and {settings.kafka_topic_prefix}.blobs"
            )
        else:
            say(f"  events:      {mirror.api_url}/mirror/v1/events (MIRROR_KAFKA_BOOTSTRAP unset)")
        stale = await stale_scopes(mirror.pool, scopes)
        if stale:
            say(
                f"  note:        this data dir also holds {', '.join(stale)} from an earlier demo "
                "with another --seed; the figures include their images (use a fresh --data-dir)"
            )
        say("mirroring the simulator… (Ctrl-C to stop)")
        with welcome:
            await mirror.wait(stop)
        say("stopping…")


@dataclass(frozen=True, slots=True)
class _Stop:
    """The demo's stop request and the signal that made it (for a truthful line)."""

    event: asyncio.Event
    signalled: Signalled


class _Printer:
    """Lines for the user on stdout, flushed at once (a pipe must see them too)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()


class _Welcome:
    """Progress on a terminal during the first mirror, then the dedup summary and curl commands."""

    def __init__(self, say: _Printer, interval: float, stopping: _Stop) -> None:
        self.say = say
        self._stopping = stopping
        self.mirror: Mirror | None = None
        self._terminal: TerminalProgress | None = (
            TerminalProgress(sys.stderr) if sys.stderr.isatty() else None
        )
        self._progress = _FirstPassProgress(self._terminal)
        self._passes = 0
        self._interval = interval

    def hooks(self) -> IngestHooks:
        return IngestHooks(progress=self._progress, on_pass=self._on_pass)

    def __enter__(self) -> _Welcome:
        if self._terminal is not None:
            self._terminal.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_progress()

    def _end_progress(self) -> None:
        self._progress.target = NullProgress()
        if self._terminal is not None:
            self._terminal.__exit__(None, None, None)
            self._terminal = None

    async def _on_pass(self, summary: IngestSummary) -> None:
        self._passes += 1
        if self._passes == 1:
            self._end_progress()
            if self._stopping.event.is_set():
                # Stopping: no figures nor commands to try, only what the pass got to.
                self._stopped_line(summary)
                return
            try:
                await self._first_summary(summary)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The welcome is a courtesy: the mirror goes on without it.
                log.warning("could not print the dedup summary: %r", exc)
        elif summary.created or summary.updated or summary.deleted:
            self.say(
                f"sync: {summary.created} created, {summary.updated} updated, "
                f"{summary.deleted} deleted upstream since the last pass"
            )

    def _stopped_line(self, summary: IngestSummary) -> None:
        signalled = self._stopping.signalled
        why = f"stopped by {signalled.by}" if signalled.first else "cut short by the stop"
        if any(r.status is not WalkStatus.COMPLETE for r in summary.scopes):
            self.say(f"first mirror {why} after {summary.images:,} images; the index is partial")
        else:
            self.say(f"first mirror: {summary.images:,} images, complete as the demo stopped")

    async def _first_summary(self, summary: IngestSummary) -> None:
        assert self.mirror is not None
        say, pool, url = self.say, self.mirror.pool, self.mirror.api_url
        # the figures below (and any `mirror stats` run once this is printed) are exact
        await fold_to_end(pool)
        rate = summary.images / summary.seconds if summary.seconds else 0.0
        say()
        say(
            f"first mirror: {summary.images:,} images in {summary.seconds:.1f} s "
            f"({rate:,.0f} images/s), {summary.errors} error(s)"
        )
        for result in summary.scopes:
            if result.error:
                say(f"  {result.scope}: {result.status.value}: {result.error}")
        stats = await fetch_stats(pool, None)
        report = await fetch_layer_report(pool, limit=3, reclaimable_limit=0)
        for line in dedup_lines(stats, report):
            say(line)
        say()
        for line in await curl_lines(pool, url, report, self.mirror.settings):
            say(line)
        say()
        say(
            f"the ingest re-walks the simulator every {self._interval:g} s; "
            "its churn shows up as events and on the dashboard. Ctrl-C to stop."
        )


class _FirstPassProgress:
    """Forwards walk progress to the terminal display until the first pass is over."""

    def __init__(self, terminal: WalkProgress | None) -> None:
        self.target: WalkProgress = terminal or NullProgress()

    def start(self, scope: str, expected: int | None) -> None:
        self.target.start(scope, expected)

    def advance(self, scope: str, images: int) -> None:
        self.target.advance(scope, images)

    def finish(self, scope: str, status: str) -> None:
        self.target.finish(scope, status)


def format_bytes(value: int) -> str:
    """IEC units with one decimal, as the dashboard shows them."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(amount) < 1024 or unit == "PiB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def dedup_lines(stats: DedupStats, report: LayerReport) -> list[str]:
    """The first dedup summary: totals, ratio and the layers that save the most."""
    lines = [
        f"dedup: {stats.images:,} images reference {format_bytes(stats.logical_bytes)} of blobs; "
        f"{stats.blobs:,} distinct blobs store {format_bytes(stats.stored_bytes)}",
        f"       {stats.dedup_ratio:.2f}× dedup ratio, {format_bytes(stats.saved_bytes)} saved "
        "by sharing layers",
    ]
    if report.layers:
        lines.append("top shared layers:")
        for layer in report.layers:
            lines.append(
                f"  {layer.digest[:19]}…  {format_bytes(layer.size):>10}  × {layer.ref_count:,} "
                f"images in {layer.repository_count:,} repositories: "
                f"{format_bytes(layer.saved_bytes)} saved"
            )
    return lines


SELECT_WALKED_SCOPES = """
SELECT scope FROM scopes ORDER BY scope
"""


async def stale_scopes(pool: asyncpg.Pool, current: tuple[Scope, ...]) -> list[str]:
    """Scopes an earlier demo walked that this simulator does not have (another seed)."""
    wanted = {str(scope) for scope in current}
    return [r["scope"] for r in await pool.fetch(SELECT_WALKED_SCOPES) if r["scope"] not in wanted]


SELECT_SAMPLE_IMAGE = """
SELECT id, name, split_part(name, '/', 1) AS registry_id, folder_id FROM images ORDER BY id LIMIT 1
"""


async def curl_lines(
    pool: asyncpg.Pool, url: str, report: LayerReport, settings: Settings | None = None
) -> list[str]:
    """Ready-to-paste commands against real ids of this index (and its data dir)."""
    sample = await pool.fetchrow(SELECT_SAMPLE_IMAGE)
    images = f"{url}/container-registry/v1/images"
    lines = ["try:"]
    if sample is not None:
        folder, registry = sample["folder_id"], sample["registry_id"]
        if folder:
            lines.append(f"  curl -s '{images}?folderId={folder}&pageSize=2'")
        name_filter = quote(f'name IN ("{sample["name"]}")', safe="(),/")
        lines.append(
            f"  curl -s '{images}?registryId={registry}&filter={name_filter}"
            "&orderBy=created_at%20desc'"
        )
        lines.append(f"  curl -s '{images}/{sample['id']}'")
    if report.layers:
        lines.append(f"  curl -s '{url}/mirror/v1/blobs/{report.layers[0].digest}'")
    lines.append(f"  curl -s '{url}/mirror/v1/stats'")
    if sample is not None:
        lines.append(f"  curl -s '{url}/mirror/v1/stats?registryId={sample['registry_id']}'")
    lines.append(f"  curl -s '{url}/mirror/v1/stats/layers'")
    if sample is not None:
        lines.append(f"  curl -s '{url}/mirror/v1/images/{sample['id']}/usage'")
    # the churn's deletions and tag moves, not the first mirror's thousands of creations
    lines.append(
        f"  curl -s '{url}/mirror/v1/events?type=registry.image.deleted&type=registry.tag.*&limit=5'"
    )
    if settings is not None and settings.embedded_database:
        lines.append(f"  mirror stats --data-dir {shlex.quote(str(settings.data_dir))}")
    return lines
