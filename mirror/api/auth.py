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

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mirror.api.appkeys import PUBLIC_PATHS
from mirror.errors import PermissionDenied, Unauthenticated
from mirror.settings import Secret

READ = "read"
ADMIN = "admin"
SAFE_METHODS = frozenset({"GET", "HEAD"})
_ROLE_RANK = {READ: 1, ADMIN: 2}


class TokenTable:
    """The configured tokens, kept only as digests."""

    def __init__(self, tokens: Mapping[Secret, str]) -> None:
        self._entries = [(_digest(token.reveal()), role) for token, role in tokens.items()]

    def role_of(self, presented: str) -> str | None:
        """The role of ``presented``, or None; takes the same time whichever entry matches."""
        candidate = _digest(presented)
        found: str | None = None
        for digest, role in self._entries:
            if hmac.compare_digest(digest, candidate):
                found = role
        return found


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
        authorize(tokens, request.headers.get("Authorization", ""), required_role(request.method))
        return await handler(request)

    return check_token


def authorize(tokens: TokenTable, authorization: str, role: str) -> None:
    """Check an ``Authorization`` value (HTTP header or gRPC metadata) for ``role``.

    Raises ``Unauthenticated`` without a valid bearer token, ``PermissionDenied``
    when the token's role is below ``role``.
    """
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthenticated("Authentication required: send Authorization: Bearer <token>")
    found = tokens.role_of(presented.strip())
    if found is None:
        raise Unauthenticated("The token is invalid")
    if _ROLE_RANK[found] < _ROLE_RANK[role]:
        raise PermissionDenied("Permission denied: this operation needs the admin role")


def _digest(token: str) -> bytes:
    # A header's bytes that are not UTF-8 arrive as surrogate escapes: digest the bytes sent.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
