"""Who asked for a change through the API, as it goes into the change's events (``actor``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mirror.api.auth import PRINCIPAL
from mirror.api.middleware import REQUEST_ID

# Without MIRROR_API_TOKENS nobody is authenticated (the API then listens on loopback only).
ANONYMOUS = "anonymous"


def actor_of(request: web.Request) -> dict[str, Any]:
    """``{"role", "tokenId", "requestId", "clientAddress"}``; no secret, empty fields omitted."""
    principal = request.get(PRINCIPAL)
    actor: dict[str, Any] = {"role": principal.role if principal is not None else ANONYMOUS}
    if principal is not None:
        actor["tokenId"] = principal.token_id
    request_id = request.get(REQUEST_ID)
    if request_id:
        actor["requestId"] = request_id
    if request.remote:
        actor["clientAddress"] = request.remote
    return actor
