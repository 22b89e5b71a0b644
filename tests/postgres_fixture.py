"""Where the tests' PostgreSQL comes from.

Resolution order: ``MIRROR_TEST_DATABASE_URL`` → a testcontainers PostgreSQL 18
when a Docker engine answers → an embedded PostgreSQL 18 in a temporary
folder. With ``CI=true`` a server that cannot start fails the run; nothing skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def docker_available() -> bool:
    """True when a Docker engine answers (a user's laptop); never true on this project's CI."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def dsn_with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@contextmanager
def postgres_for_tests() -> Iterator[str]:
    """Yield an admin DSN of a PostgreSQL server the tests may create databases on."""
    from_env = os.environ.get("MIRROR_TEST_DATABASE_URL")
    if from_env:
        yield from_env
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            yield container.get_connection_url()
        return
    from mirror.store.embedded import EmbeddedPostgres

    data_dir = Path(tempfile.mkdtemp(prefix="mirror-test-pg-"))
    server = EmbeddedPostgres(data_dir, delete_on_stop=True)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def new_database_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"
