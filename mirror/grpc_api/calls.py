"""What every gRPC call of the mirror goes through: a request id, the token check, errors.

The REST middlewares' rules, for gRPC: ``authorization: Bearer <token>``
metadata checked against ``MIRROR_API_TOKENS`` (``read`` to read, ``admin`` to
delete; no check when no tokens are set, a bind then being loopback-only); an
``ApiError`` ends the call with its status code and message, an upstream that
answered an error passes its error on, an unreachable upstream or database is
UNAVAILABLE, anything else INTERNAL with nothing of the internals. Every answer
carries the request id in its trailing metadata (``mirror.grpc_status``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeAlias, TypeVar

import grpc

from mirror.api.actor import ANONYMOUS
from mirror.api.auth import Principal, TokenTable, authorize
from mirror.api.middleware import DATABASE_UNAVAILABLE, INTERNAL_MESSAGE
from mirror.errors import (
    ApiError,
    Internal,
    Unavailable,
    UpstreamError,
    UpstreamStatusError,
)
from mirror.grpc_status import abort, new_request_id, set_request_id

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
R = TypeVar("R")
S = TypeVar("S")
Method = Callable[[S, Any, Context], Awaitable[R]]


class Guard:
    """The token check of one server (``None`` tokens: every call is let through)."""

    def __init__(self, tokens: TokenTable | None) -> None:
        self.tokens = tokens

    def check(self, context: Context, role: str) -> Principal | None:
        """Who the call's token names (None when no tokens are set)."""
        if self.tokens is None:
            return None
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode(errors="replace")
        return authorize(self.tokens, header, role)


# Who made the call being served: (principal, request id), set by ``rpc`` for the method.
_CALLER: ContextVar[tuple[Principal | None, str]] = ContextVar("grpc_caller")


def actor_of(context: Context) -> dict[str, Any]:
    """The REST ``actor`` for a gRPC call: role, non-secret token id, request id, peer."""
    principal, request_id = _CALLER.get((None, ""))
    actor: dict[str, Any] = {"role": principal.role if principal is not None else ANONYMOUS}
    if principal is not None:
        actor["tokenId"] = principal.token_id
    if request_id:
        actor["requestId"] = request_id
    peer = context.peer()
    if peer:
        actor["clientAddress"] = peer
    return actor


def rpc(role: str | None) -> Callable[[Method[S, R]], Method[S, R]]:
    """A servicer method with the call rules; ``role`` None: a public method (no token)."""

    def wrap(method: Method[S, R]) -> Method[S, R]:
        name = method.__name__

        @functools.wraps(method)
        async def call(self: S, request: Any, context: Context) -> R:
            request_id = new_request_id()
            try:
                principal = None
                if role is not None:
                    guard: Guard = self.guard  # type: ignore[attr-defined]
                    principal = guard.check(context, role)
                _CALLER.set((principal, request_id))
                answer = await method(self, request, context)
            except Exception as exc:
                error = _as_api_error(exc, name, request_id)
                await abort(context, error, request_id)
            set_request_id(context, request_id)
            return answer

        return call

    return wrap


def _as_api_error(exc: Exception, name: str, request_id: str) -> ApiError:
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, UpstreamStatusError):
        error = exc.error  # the upstream's own verdict, passed on as it gave it
    elif isinstance(exc, UpstreamError):
        log.warning("grpc request %s %s: %s", request_id, name, exc)
        return Unavailable("the upstream is unavailable")
    elif isinstance(exc, DATABASE_UNAVAILABLE):
        log.warning(
            "grpc request %s %s: the database is unavailable (%s)",
            request_id,
            name,
            type(exc).__name__,
        )
        return Unavailable("the index database is unavailable")
    else:
        log.exception("grpc request %s %s failed", request_id, name)
        return Internal(INTERNAL_MESSAGE)
    level = logging.WARNING if error.http_status >= 500 else logging.INFO
    log.log(level, "grpc request %s %s -> %s: %s", request_id, name, error.code.name, error.message)
    return error
