"""Credentials for the upstream: where the ``Authorization: Bearer`` token comes from.

Three sources, chosen by the Settings (at most one is set):

- ``StaticToken``: ``MIRROR_UPSTREAM_TOKEN``, used as is;
- ``TokenFile``: ``MIRROR_UPSTREAM_TOKEN_FILE``, re-read whenever the file changes
  (a sidecar rotates it);
- ``ServiceAccountKey``: ``MIRROR_UPSTREAM_SA_KEY_FILE``, an authorized key whose
  PS256-signed JWT is exchanged at ``{iam_url}/iam/v1/tokens`` for an IAM token,
  refreshed well before it expires.

No token, JWT or key ever reaches a log line or an error message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import jwt
import orjson

from mirror.errors import ConfigError, UpstreamError
from mirror.settings import Secret, Settings

log = logging.getLogger(__name__)

IAM_TOKENS_PATH = "/iam/v1/tokens"
JWT_LIFETIME_S = 3600  # the IAM service accepts JWTs valid for at most one hour
DEFAULT_TOKEN_LIFETIME_S = 12 * 3600


class Credentials(Protocol):
    """A source of bearer tokens. ``refresh=True`` after a 401: drop any cached token."""

    async def token(self, *, refresh: bool = False) -> str | None: ...


class NoCredentials:
    async def token(self, *, refresh: bool = False) -> str | None:
        return None


class StaticToken:
    def __init__(self, token: Secret) -> None:
        self._token = token

    async def token(self, *, refresh: bool = False) -> str | None:
        return self._token.reveal()

    def __repr__(self) -> str:
        return "StaticToken(********)"


class TokenFile:
    """A token kept in a file; read again whenever its inode, size or mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None

    async def token(self, *, refresh: bool = False) -> str | None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._token is not None:
                # A rotation in progress (file briefly missing): keep the last token.
                log.warning("token file %s unreadable (%s); using the last token", self.path, exc)
                return self._token
            raise ConfigError(f"MIRROR_UPSTREAM_TOKEN_FILE: cannot read {self.path}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp or refresh:
            text = self.path.read_text().strip()
            if not text and self._token is not None:
                return self._token  # half-written file: try again on the next call
            if self._stamp is not None and text != self._token:
                log.info("token file %s changed; using the new token", self.path)
            self._stamp, self._token = stamp, text or None
        return self._token

    def __repr__(self) -> str:
        return f"TokenFile({self.path})"


@dataclass(frozen=True, slots=True)
class AuthorizedKey:
    """A service-account authorized key (the JSON the cloud console hands out)."""

    key_id: str
    service_account_id: str
    private_key: Secret

    @classmethod
    def load(cls, path: Path) -> AuthorizedKey:
        try:
            data = orjson.loads(path.read_bytes())
            return cls(
                key_id=str(data["id"]),
                service_account_id=str(data["service_account_id"]),
                private_key=Secret(str(data["private_key"])),
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(
                f"MIRROR_UPSTREAM_SA_KEY_FILE: {path} is not a service-account key"
            ) from None


def sign_jwt(key: AuthorizedKey, audience: str, now: float) -> str:
    """A PS256 JWT asserting the service account, valid for an hour, to trade for an IAM token."""
    claims = {
        "iss": key.service_account_id,
        "aud": audience,
        "iat": int(now),
        "exp": int(now) + JWT_LIFETIME_S,
    }
    try:
        return jwt.encode(
            claims, key.private_key.reveal(), algorithm="PS256", headers={"kid": key.key_id}
        )
    except (ValueError, TypeError, jwt.PyJWTError):
        # The exception text may quote key material: say only what failed.
        raise ConfigError(
            "MIRROR_UPSTREAM_SA_KEY_FILE: the private key cannot sign PS256"
        ) from None


class ServiceAccountKey:
    """IAM tokens for a service account, refreshed before they expire.

    A token is replaced once half its life has passed (at most an hour after
    issue, as the cloud recommends); if a refresh fails while the old token is
    still valid, the old one keeps being used and the refresh is retried later.
    """

    def __init__(
        self,
        key: AuthorizedKey,
        session: aiohttp.ClientSession,
        iam_url: str,
        *,
        clock: Callable[[], float] = time.time,
        refresh_after_s: float = 3600.0,
        timeout_s: float = 30.0,
    ) -> None:
        self._key = key
        self._session = session
        self._url = iam_url.rstrip("/") + IAM_TOKENS_PATH
        self._clock = clock
        self._refresh_after = refresh_after_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._token: str | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ServiceAccountKey(service_account_id={self._key.service_account_id})"

    async def token(self, *, refresh: bool = False) -> str | None:
        if not refresh and self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._lock:
            now = self._clock()
            if not refresh and self._token is not None and now < self._refresh_at:
                return self._token  # another caller refreshed while we waited
            try:
                await self._exchange(now)
            except UpstreamError:
                if self._token is not None and now < self._expires_at - 60 and not refresh:
                    log.warning("IAM token refresh failed; the current token stays in use")
                    self._refresh_at = now + 30
                    return self._token
                raise
            return self._token

    async def _exchange(self, now: float) -> None:
        assertion = sign_jwt(self._key, self._url, now)
        try:
            async with self._session.post(
                self._url, json={"jwt": assertion}, timeout=self._timeout
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"IAM token exchange failed: {type(exc).__name__}") from None
        if status != 200:
            raise UpstreamError(f"IAM token exchange answered HTTP {status}")
        try:
            data: dict[str, Any] = orjson.loads(body)
            token = str(data["iamToken"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UpstreamError("IAM token exchange answered without an iamToken") from None
        expires_at = _parse_expiry(data.get("expiresAt"), now)
        self._token = token
        self._expires_at = expires_at
        self._refresh_at = now + min(self._refresh_after, (expires_at - now) / 2)
        log.info("obtained an IAM token for service account %s", self._key.service_account_id)


def _parse_expiry(value: Any, now: float) -> float:
    if isinstance(value, str):
        try:
            # RFC 3339, possibly with nanoseconds (fromisoformat truncates them).
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    return now + DEFAULT_TOKEN_LIFETIME_S


def credentials_from_settings(settings: Settings, session: aiohttp.ClientSession) -> Credentials:
    """The credentials the Settings describe (none when no token setting is given)."""
    if settings.upstream_sa_key_file is not None:
        key = AuthorizedKey.load(settings.upstream_sa_key_file)
        return ServiceAccountKey(key, session, settings.iam_url)
    if settings.upstream_token_file is not None:
        return TokenFile(settings.upstream_token_file)
    if settings.upstream_token is not None:
        return StaticToken(settings.upstream_token)
    return NoCredentials()
