"""Where the tests' PostgreSQL comes from.

Resolution order: ``MIRROR_TEST_DATABASE_URL`` → a testcontainers PostgreSQL 18
when a Docker engine answers → an embedded PostgreSQL 18 in a temporary
folder. With ``CI=true`` a server that cannot start fails the run; nothing skips.

Only a server the suite started itself is tuned for speed (``fsync`` off…); a
server given through ``MIRROR_TEST_DATABASE_URL`` belongs to someone else and
its configuration is never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from mirror.store.migrate import SQL_DIR, apply_migrations, find_migrations


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


# Durability buys nothing on a throw-away server and costs seconds.
FAST_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")


@dataclass(frozen=True)
class TestServer:
    """A PostgreSQL server for the tests: its admin DSN, and whether the suite started it."""

    __test__ = False  # not a test class, whatever pytest's name rule says

    dsn: str
    owned: bool

    def speed_up_statements(self) -> list[str]:
        """``ALTER SYSTEM`` statements for a server the suite owns; none for a given one."""
        if not self.owned:
            return []
        return [f"ALTER SYSTEM SET {setting} = off" for setting in FAST_SETTINGS]


@contextmanager
def postgres_for_tests() -> Iterator[TestServer]:
    """Yield a PostgreSQL server the tests may create databases on."""
    from_env = os.environ.get("MIRROR_TEST_DATABASE_URL")
    if from_env:
        yield TestServer(from_env, owned=False)
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            yield TestServer(container.get_connection_url(), owned=True)
        return
    from mirror.store.embedded import EmbeddedPostgres

    data_dir = Path(tempfile.mkdtemp(prefix="mirror-test-pg-"))
    server = EmbeddedPostgres(data_dir, delete_on_stop=True)
    try:
        yield TestServer(server.start(), owned=True)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def new_database_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


@asynccontextmanager
async def scratch_database(
    admin_dsn: str, prefix: str, *, sql_dir: Path | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database on the test server, migrated from
    ``sql_dir`` when given (an older schema: ``schema_before``); dropped after."""
    name = new_database_name(prefix)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(dsn_with_database(admin_dsn, name))
        try:
            if sql_dir is not None:
                await apply_migrations(conn, sql_dir)
            yield conn
        finally:
            await conn.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# The stats routines as they were at schema 113 (repository names in the stats
# tables), frozen: what the databases before sql/114 are built with (tests/data/README.md).
ROUTINES_113 = Path(__file__).resolve().parent / "data" / "schema_113" / "routines"


def schema_before(
    target: Path, version: int, *, routines: Path | None = SQL_DIR / "routines"
) -> Path:
    """The migrations before ``version`` copied into ``target``, with the routine files of
    ``routines`` (today's by default; a frozen older set, or None for none): what
    ``apply_migrations`` builds the database an upgrade to ``version`` starts from."""
    (target / "routines").mkdir(parents=True)
    for migration in find_migrations():
        if migration.version < version:
            shutil.copy(migration.path, target / migration.path.name)
    if routines is not None:
        for routine in routines.glob("*.sql"):
            shutil.copy(routine, target / "routines" / routine.name)
    return target
