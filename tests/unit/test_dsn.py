"""What a PostgreSQL URL names, told without its password; what asyncpg would refuse."""

from __future__ import annotations

import pytest

from mirror.dsn import DsnParts
from mirror.errors import ConfigError
from mirror.settings import Settings


@pytest.mark.parametrize(
    ("dsn", "described"),
    [
        ("postgresql://u:pw@db:6543/mirror", "host db, port 6543, database mirror, user u"),
        ("postgres://u@db/mirror", "host db, port 5432, database mirror, user u"),
        ("postgresql://u:pw@[::1]:5433/m", "host ::1, port 5433, database m, user u"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/sock",
            "host /tmp/sock, port 5432, database postgres, user postgres",
        ),
        ("postgresql://a@h1:1,h2/d", "host h1,h2, port 1,5432, database d, user a"),
        ("postgresql://x@h/d?user=y&dbname=e&port=7", "host h, port 7, database e, user y"),
        ("postgresql://u:p%40ss@h/", "host h, port 5432, database u, user u"),
    ],
)
def test_describe_names_host_port_database_and_user(dsn: str, described: str) -> None:
    parts = DsnParts.parse(dsn)
    assert parts.describe() == described
    assert parts.problem() is None


def test_the_password_is_never_described_and_is_scrubbed_from_driver_messages() -> None:
    parts = DsnParts.parse("postgresql://u:s3cr%40t@h/d")
    assert parts.password == "s3cr@t"
    assert "s3cr" not in parts.describe()
    assert parts.scrub("bad dsn postgresql://u:s3cr@t@h/d") == "bad dsn postgresql://u:********@h/d"


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        ("postgresql://u:pw@h:99999/d", "port 99999 is not a TCP port (1-65535)"),
        ("postgresql://u:pw@h:0/d", "port 0 is not a TCP port (1-65535)"),
        ("postgresql://u:pw@h/d?sslmode=bogus", "sslmode 'bogus' is not one of"),
    ],
)
def test_what_asyncpg_would_refuse_is_a_configuration_error(dsn: str, problem: str) -> None:
    assert (DsnParts.parse(dsn).problem() or "").startswith(problem)
    with pytest.raises(ConfigError) as error:
        Settings.load(env={"MIRROR_DATABASE_URL": dsn})
    message = str(error.value)
    assert message.startswith("MIRROR_DATABASE_URL (host h, port ")
    assert problem in message and "pw" not in message
