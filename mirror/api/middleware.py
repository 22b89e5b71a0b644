"""Every answer's error shape: the upstream's error JSON with a fresh request id.

Each request gets a request id (also sent back as ``X-Request-Id``). An
``ApiError`` becomes ``{"code", "message", "details": [RequestInfo]}`` with the
cloud's HTTP status; aiohttp's own errors (no such route, wrong method, body
too large) are translated the same way; a database that does not answer is 503
UNAVAILABLE; any other exception is logged with
its traceback and the request id and answered as a bare 500 INTERNAL that
reveals nothing of the internals. Request paths and error messages (which may
quote what the client sent) are logged with their control characters escaped:
a ``%0a`` in a path never starts a log line of its own.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from mirror.api.jsonbody import json_response
from mirror.errors import (
    ApiError,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
    UpstreamError,
    UpstreamStatusError,
)
from mirror.log_format import escape_controls

log = logging.getLogger(__name__)

REQUEST_ID = web.RequestKey("request_id", str)
# The database went away or refuses connections: a 503 the client may retry, not a 500.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    OSError,
    TimeoutError,
)
REQUEST_ID_HEADER = "X-Request-Id"
INTERNAL_MESSAGE = "Internal error"


def error_response(error: ApiError, request_id: str) -> web.Response:
    response = json_response(error.to_json(request_id), status=error.http_status)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return NotFound("Not Found")
    if exc.status == 405:
        return Unimplemented("Method Not Allowed")
    if exc.status == 413:
        return InvalidArgument("Request body too large")
    if 400 <= exc.status < 500:
        return InvalidArgument(exc.reason)
    return Internal(INTERNAL_MESSAGE)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Assign the request id; render every failure as the upstream's error JSON."""
    request_id = str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except ApiError as exc:
        _log_api_error(request, request_id, exc)
        return error_response(exc, request_id)
    except UpstreamStatusError as exc:
        # The upstream's own verdict (Delete): passed on as it gave it.
        _log_api_error(request, request_id, exc.error)
        return error_response(exc.error, request_id)
    except UpstreamError as exc:
        log.warning("request %s %s %s: %s", request_id, request.method, _path(request), exc)
        return error_response(Unavailable("the upstream is unavailable"), request_id)
    except DATABASE_UNAVAILABLE as exc:
        log.warning(
            "request %s %s %s: the database is unavailable (%s)",
            request_id,
            request.method,
            _path(request),
            type(exc).__name__,
        )
        return error_response(Unavailable("the index database is unavailable"), request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects are answers, not errors
        error = _from_http_exception(exc)
        _log_api_error(request, request_id, error)
        return error_response(error, request_id)
    except Exception:
        log.exception("request %s %s %s failed", request_id, request.method, _path(request))
        return error_response(Internal(INTERNAL_MESSAGE), request_id)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _log_api_error(request: web.Request, request_id: str, error: ApiError) -> None:
    level = logging.WARNING if error.http_status >= 500 else logging.INFO
    log.log(
        level,
        "request %s %s %s -> %d %s: %s",
        request_id,
        request.method,
        _path(request),
        error.http_status,
        error.code.name,
        escape_controls(error.message),
    )


def _path(request: web.Request) -> str:
    return escape_controls(request.path)
