"""A bad MIRROR_DATABASE_URL, for every command that connects: one line naming host, port,
database and user (never the password) and a non-zero exit: 3 for a server that refuses
or cannot be reached, 2 for a URL asyncpg cannot use."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mirror.dsn import DsnParts
from mirror.exit_codes import ExitCode
from mirror.store.embedded import EmbeddedPostgres
from tests.e2e.demo_process import clean_env

PASSWORD = "n0t-the-Passw0rd"
ROLE = "mirror_pw"

COMMANDS = {
    "ingest": ("ingest", "--once", "--scope", "folder:f1", "--upstream-url", "http://127.0.0.1:9"),
    "serve": ("serve", "--port", "0"),
    "relay": ("relay", "--once", "--kafka-bootstrap", "127.0.0.1:9"),
    "run": ("run", "--port", "0", "--scope", "folder:f1", "--upstream-url", "http://127.0.0.1:9"),
    "stats": ("stats",),
    "db upgrade": ("db", "upgrade"),
}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
async def password_server() -> AsyncIterator[str]:
    """A PostgreSQL of this module's own whose ``mirror_pw`` role must give a password
    (the embedded server trusts local users; this one is changed, not the shared one).
    Yields the socket DSN for that role, with a wrong password."""
    data_dir = Path(tempfile.mkdtemp(prefix="mirror-test-pw-"))
    server = EmbeddedPostgres(data_dir, delete_on_stop=True)
    try:
        dsn = await server.astart()
        hba = server.pgdata / "pg_hba.conf"
        hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD 'the-right-one'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        socket_dir = DsnParts.parse(dsn).host
        yield f"postgresql://{ROLE}:{PASSWORD}@/postgres?host={socket_dir}"
    finally:
        await server.astop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def mirror(url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(MIRROR_DATABASE_URL=url, MIRROR_LOG_LEVEL="WARNING"),
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def unknown_host(_: str) -> str:
    return f"postgresql://u:{PASSWORD}@db.invalid:5432/d"


def bad_sslmode(_: str) -> str:
    return f"postgresql://u:{PASSWORD}@127.0.0.1:5432/d?sslmode=bogus"


def port_99999(_: str) -> str:
    return f"postgresql://u:{PASSWORD}@127.0.0.1:99999/d"


def bad_password(password_dsn: str) -> str:
    return password_dsn


CASES = {
    "bad password": (
        bad_password,
        ExitCode.DATABASE,
        "mirror: database unavailable: cannot connect to PostgreSQL at host {host}, port 5432, "
        f'database postgres, user {ROLE}: password authentication failed for user "{ROLE}"',
    ),
    "unknown host": (
        unknown_host,
        ExitCode.DATABASE,
        "mirror: database unavailable: cannot connect to PostgreSQL at host db.invalid, "
        "port 5432, database d, user u: ",
    ),
    "bad sslmode": (
        bad_sslmode,
        ExitCode.CONFIG,
        "mirror: configuration error: MIRROR_DATABASE_URL (host 127.0.0.1, port 5432, "
        "database d, user u): sslmode 'bogus' is not one of disable, allow, prefer, require, "
        "verify-ca, verify-full",
    ),
    "port 99999": (
        port_99999,
        ExitCode.CONFIG,
        "mirror: configuration error: MIRROR_DATABASE_URL (host 127.0.0.1, port 99999, "
        "database d, user u): port 99999 is not a TCP port (1-65535)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", list(COMMANDS))
async def test_a_bad_database_url_is_one_line_and_a_non_zero_exit(
    password_server: str, case: str, command: str
) -> None:
    make_url, code, line = CASES[case]
    url = make_url(password_server)
    status, out, err = await mirror(url, *COMMANDS[command])
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert PASSWORD not in err + out
    assert lines[0].startswith(line.format(host=DsnParts.parse(url).host)), lines[0]
    assert status == code, err
