"""What a PostgreSQL URL names (host, port, database, user), told without its password.

Error lines about the database quote ``DsnParts.describe()``, never the URL:
the URL may hold a password. ``DsnParts.problem()`` finds what asyncpg would
reject before connecting (a port out of range, an unknown ``sslmode``), so that
a malformed URL is a configuration error named as such.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PORT = "5432"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True, slots=True)
class DsnParts:
    host: str
    port: str
    database: str
    user: str
    sslmode: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, dsn: str) -> DsnParts:
        """The parts of a postgresql:// URL, with libpq's defaults for what it leaves out."""
        parts = urlsplit(dsn)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        host, port = _split_hostport(hostinfo)
        user = query.get("user") or unquote(user) or os.environ.get("PGUSER") or _os_user()
        host = query.get("host") or unquote(host) or os.environ.get("PGHOST") or "localhost"
        database = query.get("dbname") or query.get("database") or unquote(parts.path[1:])
        return cls(
            host=host,
            port=query.get("port") or port or os.environ.get("PGPORT") or DEFAULT_PORT,
            database=database or user,
            user=user,
            sslmode=query.get("sslmode"),
            password=query.get("password") or unquote(password) or None,
        )

    def describe(self) -> str:
        return f"host {self.host}, port {self.port}, database {self.database}, user {self.user}"

    def problem(self) -> str | None:
        """Why asyncpg would refuse this URL before connecting, or None."""
        for port in self.port.split(","):
            if not port.isdigit() or not 0 < int(port) <= 65535:
                return f"port {port} is not a TCP port (1-65535)"
        if self.sslmode is not None and self.sslmode not in SSL_MODES:
            return f"sslmode {self.sslmode!r} is not one of {', '.join(SSL_MODES)}"
        return None

    def scrub(self, text: str) -> str:
        """``text`` with the password (if any) masked: driver messages may quote the URL."""
        if self.password:
            text = text.replace(self.password, "********")
        return text


def _split_hostport(hostinfo: str) -> tuple[str, str]:
    """'h:5432' -> ('h', '5432'); '[::1]:5432' -> ('::1', '5432'); several hosts stay as given."""
    if "," in hostinfo:
        hosts, ports = [], []
        for one in hostinfo.split(","):
            host, port = _split_hostport(one)
            hosts.append(host)
            ports.append(port or DEFAULT_PORT)
        return ",".join(hosts), ",".join(ports)
    if hostinfo.startswith("["):
        host, _, rest = hostinfo[1:].partition("]")
        return host, rest.lstrip(":")
    host, _, port = hostinfo.partition(":")
    return host, port


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "postgres"
