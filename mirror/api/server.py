"""The API's HTTP server: aiohttp's, answering even what its parser refuses in the upstream's JSON.

aiohttp answers a request its parser refuses (a request line over 8 KB, raw
non-ASCII bytes in the target, a malformed method or header) before any
middleware runs, as ``text/plain`` that echoes the offending line. ``ApiRunner``
is ``web.AppRunner`` with a protocol whose ``handle_error`` answers those in
the upstream's error JSON instead (400 INVALID_ARGUMENT, a fresh request id,
nothing of the request echoed) and logs one escaped line. Every server of the
local API starts through it (``mirror serve``, ``mirror run``, ``mirror demo``).

Unfinished requests are bounded by ``create_app``'s ``idle_timeout`` (aiohttp's
``keepalive_timeout``): a connection whose request headers are not complete
that long after it opened, or after its previous answer, is closed, so a
half-open or trickling connection is never held for long.
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from mirror.api.middleware import error_response
from mirror.errors import ApiError, DeadlineExceeded, Internal, InvalidArgument

log = logging.getLogger(__name__)

# What the parser found, said without repeating any of the request.
_PARSER_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "the request line or a header is too long"),
    (http_exceptions.BadHttpMethod, "unknown or malformed HTTP method"),
    (http_exceptions.BadStatusLine, "malformed request line"),
    (http_exceptions.InvalidHeader, "malformed header"),
    (http_exceptions.InvalidURLError, "malformed request target"),
)


def describe(status: int, exc: BaseException | None) -> ApiError:
    """The upstream's error for an answer aiohttp's protocol gives by itself."""
    if status == 504:
        return DeadlineExceeded("Deadline exceeded")
    if 400 <= status < 500:
        for kind, message in _PARSER_ERRORS:
            if isinstance(exc, kind):
                return InvalidArgument(f"Bad request: {message}")
        return InvalidArgument("Bad request: malformed HTTP request")
    return Internal("Internal error")


class ApiRequestHandler(RequestHandler):
    """aiohttp's protocol, with its own error answers in the upstream's error JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already under way: the connection is broken")
        request_id = str(uuid.uuid4())
        error = describe(status, exc)
        if error.http_status >= 500:
            log.error("request %s failed in the HTTP server", request_id, exc_info=exc)
        else:
            log.info(
                "request %s from %s refused by the HTTP parser -> %d %s: %s",
                request_id,
                request.remote,
                error.http_status,
                error.code.name,
                error.message,
            )
        response = error_response(error, request_id)  # X-Request-Id included
        response.force_close()
        return response


class ApiServer(web.Server):
    """``web.Server`` that speaks through ``ApiRequestHandler``."""

    def __call__(self) -> RequestHandler:
        return ApiRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` whose server answers parser errors in the upstream's error JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return ApiServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
