"""One Settings object, read from flags and the environment once at start.

Flags win over the environment. Every problem raises ``ConfigError`` with one
line naming the setting; secret values are wrapped in ``Secret`` so that no
repr, log line or error message can show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import platformdirs

from mirror.dsn import DsnParts
from mirror.errors import ConfigError
from mirror.model import Scope

DEFAULT_UPSTREAM_URL = "https://container-registry.api.cloud.yandex.net"
DEFAULT_OPERATION_URL = "https://operation.api.cloud.yandex.net"
DEFAULT_IAM_URL = "https://iam.api.cloud.yandex.net"
API_ROLES = ("read", "admin")
DEFAULT_GRPC_PORT = 50051


class Secret:
    """A string that never shows itself in repr, str or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("registry-mirror", appauthor=False))


def default_demo_data_dir() -> Path:
    """Apart from the real default (``registry-mirror``), so the demo never meets real data."""
    return Path(platformdirs.user_data_dir("registry-mirror-demo", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything the mirror is configured with. Field metadata names the environment variable."""

    database_url: Secret | None = field(default=None, metadata={"env": "MIRROR_DATABASE_URL"})
    data_dir: Path = field(default_factory=default_data_dir, metadata={"env": "MIRROR_DATA_DIR"})
    upstream_url: str = field(default=DEFAULT_UPSTREAM_URL, metadata={"env": "MIRROR_UPSTREAM_URL"})
    operation_url: str = field(
        default=DEFAULT_OPERATION_URL, metadata={"env": "MIRROR_OPERATION_URL"}
    )
    iam_url: str = field(default=DEFAULT_IAM_URL, metadata={"env": "MIRROR_IAM_URL"})
    upstream_token: Secret | None = field(default=None, metadata={"env": "MIRROR_UPSTREAM_TOKEN"})
    upstream_token_file: Path | None = field(
        default=None, metadata={"env": "MIRROR_UPSTREAM_TOKEN_FILE"}
    )
    upstream_sa_key_file: Path | None = field(
        default=None, metadata={"env": "MIRROR_UPSTREAM_SA_KEY_FILE"}
    )
    upstream_rps: float = field(default=50.0, metadata={"env": "MIRROR_UPSTREAM_RPS"})
    upstream_concurrency: int = field(default=8, metadata={"env": "MIRROR_UPSTREAM_CONCURRENCY"})
    scopes: tuple[Scope, ...] = field(
        default=(), metadata={"env": "MIRROR_SCOPES", "flag": "--scope"}
    )
    # A walk listing fewer than this share of the images the index holds for its scope
    # is suspect: it deletes nothing and sends no confirmation Get (0 turns the guard off).
    delete_guard: float = field(default=0.5, metadata={"env": "MIRROR_DELETE_GUARD"})
    # At most this many deletion-confirming Gets per scope and pass; the rest wait.
    delete_confirm_max: int = field(default=1000, metadata={"env": "MIRROR_DELETE_CONFIRM_MAX"})
    kafka_bootstrap: str | None = field(default=None, metadata={"env": "MIRROR_KAFKA_BOOTSTRAP"})
    kafka_topic_prefix: str = field(
        default="registry-mirror", metadata={"env": "MIRROR_KAFKA_TOPIC_PREFIX"}
    )
    kafka_partitions: int = field(default=3, metadata={"env": "MIRROR_KAFKA_PARTITIONS"})
    kafka_replication: int = field(default=1, metadata={"env": "MIRROR_KAFKA_REPLICATION"})
    kafka_compression: str = field(default="zstd", metadata={"env": "MIRROR_KAFKA_COMPRESSION"})
    head_interval: float = field(default=5.0, metadata={"env": "MIRROR_HEAD_INTERVAL"})
    events_retention: timedelta = field(
        default=timedelta(days=7), metadata={"env": "MIRROR_EVENTS_RETENTION"}
    )
    api_tokens: Mapping[Secret, str] = field(
        default_factory=dict, metadata={"env": "MIRROR_API_TOKENS"}
    )
    log_level: str = field(default="INFO", metadata={"env": "MIRROR_LOG_LEVEL"})
    # The gRPC listener of serve/run/demo (same host as the HTTP API); None: no listener.
    grpc_port: int | None = field(default=DEFAULT_GRPC_PORT, metadata={"env": "MIRROR_GRPC_PORT"})
    # MiB of serialized images the gRPC API keeps to answer List/Get without encoding (0: none).
    # Off by default: with the C encoder a lookup costs more than encoding (docs/GRPC.md).
    grpc_image_cache_mb: int = field(default=0, metadata={"env": "MIRROR_GRPC_IMAGE_CACHE_MB"})
    # MiB of List pages the API keeps, each valid until the index changes (0: none).
    api_page_cache_mb: int = field(default=64, metadata={"env": "MIRROR_API_PAGE_CACHE_MB"})
    # A PEM certificate chain and its key: both listeners then speak TLS.
    tls_cert: Path | None = field(default=None, metadata={"env": "MIRROR_TLS_CERT"})
    tls_key: Path | None = field(default=None, metadata={"env": "MIRROR_TLS_KEY"})

    @classmethod
    def env_names(cls) -> frozenset[str]:
        """Every environment variable the Settings read."""
        return frozenset(f.metadata["env"] for f in fields(cls))

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Build from the environment, then apply the flags that were given (None = not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"], "")
            if raw.strip() != "":
                values[f.name] = _PARSERS[f.name](raw.strip(), f.metadata["env"])
        if flags.get("data_dir") is not None and flags.get("database_url") is None:
            # Flags win over the environment: a data-dir flag selects the embedded
            # server in it, whatever MIRROR_DATABASE_URL says.
            values.pop("database_url", None)
        for name, value in flags.items():
            if value is None:
                continue
            if name not in _PARSERS:
                raise TypeError(f"unknown setting {name}")
            meta = next(f.metadata for f in fields(cls) if f.name == name)
            flag = meta.get("flag", f"--{name.replace('_', '-')}")
            values[name] = (
                _PARSERS[name](value, f"{flag} ({meta['env']})")
                if isinstance(value, str)
                else value
            )
        settings = cls(**values)
        settings.check()
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def check(self) -> None:
        """Cross-field checks that a single value cannot make."""
        if self.upstream_token and self.upstream_token_file:
            raise ConfigError(
                "MIRROR_UPSTREAM_TOKEN and MIRROR_UPSTREAM_TOKEN_FILE are both set: choose one"
            )
        if self.upstream_sa_key_file and (self.upstream_token or self.upstream_token_file):
            raise ConfigError(
                "MIRROR_UPSTREAM_SA_KEY_FILE is set together with a token setting: choose one"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("MIRROR_TLS_CERT and MIRROR_TLS_KEY go together: set both or neither")

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None


def _url(raw: str, name: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL with a host, got {raw!r}")
    return raw.rstrip("/")


def _database_url(raw: str, name: str) -> Secret:
    # The DSN may hold a password: never echo it back.
    if urlsplit(raw).scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"{name} must be a postgresql:// URL")
    parts = DsnParts.parse(raw)
    problem = parts.problem()
    if problem is not None:
        raise ConfigError(f"{name} ({parts.describe()}): {problem}")
    return Secret(raw)


def _path(raw: str, name: str) -> Path:
    return Path(raw).expanduser()


def _existing_file(raw: str, name: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}: no readable file at {path}")
    return path


def _sa_key_file(raw: str, name: str) -> Path:
    path = _existing_file(raw, name)
    try:
        key = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise ConfigError(f"{name}: {path} is not a JSON service-account key") from None
    missing = [k for k in ("id", "service_account_id", "private_key") if not key.get(k)]
    if missing:
        raise ConfigError(f"{name}: {path} lacks {', '.join(missing)}")
    return path


def _secret(raw: str, name: str) -> Secret:
    return Secret(raw)


def _positive_float(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _whole_number(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _positive_int(raw: str, name: str) -> int:
    value = _whole_number(raw, name)
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _non_negative_int(raw: str, name: str) -> int:
    value = _whole_number(raw, name)
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def _fraction(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number from 0 to 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number from 0 to 1, got {raw!r}")
    return value


def _scopes(raw: str, name: str) -> tuple[Scope, ...]:
    scopes: list[Scope] = []
    for part in raw.split(","):
        if not part.strip():
            continue
        try:
            scope = Scope.parse(part)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if scope not in scopes:
            scopes.append(scope)
    return tuple(scopes)


_HOSTPORT_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def _bootstrap(raw: str, name: str) -> str:
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    bad = [s for s in servers if not _HOSTPORT_RE.match(s)]
    if not servers or bad:
        raise ConfigError(f"{name} must be host:port[,host:port…], got {raw!r}")
    return ",".join(servers)


def _topic_prefix(raw: str, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", raw):
        raise ConfigError(f"{name} may hold only letters, digits, '.', '_' and '-'")
    return raw


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(raw: str, name: str) -> timedelta:
    """A number and its unit; a bare number is refused (is ``7`` seconds or days?)."""
    text = raw.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        raise ConfigError(f"{name} needs a unit (s, m, h, d, w), e.g. {text}d; got {raw!r}")
    match = _DURATION_RE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{name} must be a positive duration like 90s, 30m, 12h, 7d; got {raw!r}")
    return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])


def _api_tokens(raw: str, name: str) -> dict[Secret, str]:
    tokens: dict[Secret, str] = {}
    for i, pair in enumerate(raw.split(","), start=1):
        pair = pair.strip()
        if not pair:
            continue
        token, sep, role = pair.rpartition(":")
        # Never echo the token: name the position of the bad pair instead.
        if not sep or not token:
            raise ConfigError(f"{name}: entry {i} is not token:role")
        if role not in API_ROLES:
            raise ConfigError(f"{name}: entry {i} has role {role!r}; roles are read, admin")
        tokens[Secret(token)] = role
    return tokens


def _grpc_port(raw: str, name: str) -> int | None:
    """A port number, 0 for any free port, or ``off`` for no gRPC listener."""
    if raw.strip().lower() == "off":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port (0-65535) or 'off', got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name} must be a port (0-65535) or 'off', got {raw!r}")
    return value


KAFKA_COMPRESSIONS = ("zstd", "gzip", "lz4", "snappy", "none")


def _kafka_compression(raw: str, name: str) -> str:
    value = raw.strip().lower()
    if value not in KAFKA_COMPRESSIONS:
        raise ConfigError(f"{name} must be one of {', '.join(KAFKA_COMPRESSIONS)}; got {raw!r}")
    return value


def _head_interval(raw: str, name: str) -> float:
    """Seconds between head-watch rounds; 0 or ``off`` turns the head-watch off."""
    if raw.strip().lower() in ("0", "off"):
        return 0.0
    return _duration(raw, name).total_seconds()


def _log_level(raw: str, name: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{name} must be one of DEBUG, INFO, WARNING, ERROR")
    return level


_PARSERS: dict[str, Any] = {
    "database_url": _database_url,
    "data_dir": _path,
    "upstream_url": _url,
    "operation_url": _url,
    "iam_url": _url,
    "upstream_token": _secret,
    "upstream_token_file": _existing_file,
    "upstream_sa_key_file": _sa_key_file,
    "upstream_rps": _positive_float,
    "upstream_concurrency": _positive_int,
    "scopes": _scopes,
    "delete_guard": _fraction,
    "delete_confirm_max": _positive_int,
    "kafka_bootstrap": _bootstrap,
    "kafka_topic_prefix": _topic_prefix,
    "kafka_partitions": _positive_int,
    "kafka_replication": _positive_int,
    "kafka_compression": _kafka_compression,
    "head_interval": _head_interval,
    "events_retention": _duration,
    "api_tokens": _api_tokens,
    "log_level": _log_level,
    "grpc_port": _grpc_port,
    "grpc_image_cache_mb": _non_negative_int,
    "api_page_cache_mb": _non_negative_int,
    "tls_cert": _existing_file,
    "tls_key": _existing_file,
}
