"""Bearer-token access control from ``MIRROR_API_TOKENS`` (roles ``read`` and ``admin``).

Reading needs any valid token; changing something (any method other than GET
or HEAD: today the image Delete) needs ``admin``. Tokens are compared
through their SHA-256 digests with ``hmac.compare_digest`` against every
configured token, so neither the position of a mismatch, nor a token's length,
nor which entry matched shows in the timing. With no tokens configured the
middleware is not installed at all (the CLI then allows loopback binds only).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mirror.api.appkeys import PUBLIC_PATHS
from mirror.errors import PermissionDenied, Unauthenticated
from mirror.settings import Secret

READ = "read"
ADMIN = "admin"
SAFE_METHODS = frozenset({"GET", "HEAD"})
_ROLE_RANK = {READ: 1, ADMIN: 2}
# Token ids are digests under their own label: not the digest the check compares.
_TOKEN_ID_LABEL = b"registry-mirror token id\x00"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the token's role and a stable, non-secret id of the token."""

    role: str
    token_id: str


PRINCIPAL = web.RequestKey("principal", Principal)


class TokenTable:
    """The configured tokens, kept only as digests."""

    def __init__(self, tokens: Mapping[Secret, str]) -> None:
        self._entries = [
            (_digest(token.reveal()), Principal(role, token_id(token.reveal())))
            for token, role in tokens.items()
        ]

    def identify(self, presented: str) -> Principal | None:
        """Who ``presented`` is, or None; takes the same time whichever entry matches."""
        candidate = _digest(presented)
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(digest, candidate):
                found = principal
        return found

    def role_of(self, presented: str) -> str | None:
        """The role of ``presented``, or None."""
        principal = self.identify(presented)
        return principal.role if principal is not None else None


def token_id(token: str) -> str:
    """A stable id of a token for logs and events (``tok-`` + 12 hex digits of a labelled
    SHA-256). It identifies without revealing: use long random tokens, as always."""
    return "tok-" + hashlib.sha256(_TOKEN_ID_LABEL + token.encode()).hexdigest()[:12]


def required_role(method: str) -> str:
    return READ if method in SAFE_METHODS else ADMIN


def auth_middleware(tokens: TokenTable) -> Middleware:
    """The middleware that checks ``Authorization: Bearer <token>`` on every non-public path.

    Public paths are read from the app (``PUBLIC_PATHS``) at each request, so
    route modules may add theirs while the app is built.
    """

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in request.app.get(PUBLIC_PATHS, ()):
            return await handler(request)
        request[PRINCIPAL] = authorize(
            tokens, request.headers.get("Authorization", ""), required_role(request.method)
        )
        return await handler(request)

    return check_token


def authorize(tokens: TokenTable, authorization: str, role: str) -> Principal:
    """Who an ``Authorization`` value (HTTP header or gRPC metadata) names, checked for ``role``.

    Raises ``Unauthenticated`` without a valid bearer token, ``PermissionDenied``
    when the token's role is below ``role``.
    """
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthenticated("Authentication required: send Authorization: Bearer <token>")
    principal = tokens.identify(presented.strip())
    if principal is None:
        raise Unauthenticated("The token is invalid")
    if _ROLE_RANK[principal.role] < _ROLE_RANK[role]:
        raise PermissionDenied("Permission denied: this operation needs the admin role")
    return principal


def _digest(token: str) -> bytes:
    # A header's bytes that are not UTF-8 arrive as surrogate escapes: digest the bytes sent.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
