"""What can go wrong between a client and the cloud, on purpose: the fault middleware.

For every cloud API request (never the admin API), in this order:

1. latency: a log-normal delay with mean ``latency_ms``;
2. one draw decides the request's fate, by the current rates:
   dropped (``drop_rate``: the connection is cut before any answer, or half-way
   through the body), throttled (``throttle_rate``: 429 RESOURCE_EXHAUSTED with
   ``Retry-After``), failed (``error_rate``: 503 UNAVAILABLE or 500 INTERNAL),
   or served;
3. authentication, when a token is required: no usable ``Authorization: Bearer``
   header is 401 UNAUTHENTICATED, a wrong token 403 PERMISSION_DENIED.

The settings are read on every request, so the admin API can switch a 5xx
storm on and off in the middle of a walk.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import random
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mirror.errors import (
    ApiError,
    Internal,
    PermissionDenied,
    Throttled,
    Unauthenticated,
    Unavailable,
)
from mirror.upstream.simulator.config import Faults

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_simulator"
# How the latency is waited out; the test suite swaps it to see each delay drawn.
sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


def fault_middleware(faults: Faults, rng: random.Random) -> Middleware:
    """The middleware applying ``faults`` (read live) to the cloud API routes."""

    @web.middleware
    async def apply_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        if faults.latency_ms > 0:
            await sleep(_latency_seconds(faults, rng))
        draw = rng.random()
        if draw < faults.drop_rate:
            return await _drop(request, handler, cut_body=rng.random() < 0.5)
        draw -= faults.drop_rate
        if draw < faults.throttle_rate:
            raise Throttled(faults.retry_after)
        draw -= faults.throttle_rate
        if draw < faults.error_rate:
            if rng.random() < 2 / 3:
                raise Unavailable("The service is temporarily unavailable, try again later")
            raise Internal("Internal error")
        if faults.token is not None:
            _authenticate(request, faults.token)
        return await handler(request)

    return apply_faults


def _latency_seconds(faults: Faults, rng: random.Random) -> float:
    mean = faults.latency_ms / 1000.0
    sigma = faults.latency_sigma
    if sigma <= 0:
        return mean
    # a log-normal with this mean: mu = ln(mean) - sigma^2 / 2
    return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)


def _authenticate(request: web.Request, token: str) -> None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthenticated("The request has no valid IAM token (Authorization: Bearer ...)")
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise PermissionDenied("Permission denied")


async def _drop(request: web.Request, handler: Handler, *, cut_body: bool) -> web.StreamResponse:
    """Cut the connection: at once, or after half of the real answer's body."""
    transport = request.transport
    if not cut_body or transport is None:
        if transport is not None:
            transport.abort()
        return web.Response(status=500)  # never reaches the client
    try:
        response = await handler(request)
    except ApiError:  # an error answer is cut off the same way
        transport.abort()
        return web.Response(status=500)
    if not isinstance(response, web.Response) or response.body is None:
        transport.abort()
        return response
    body = bytes(response.body)  # type: ignore[arg-type]
    partial = web.StreamResponse(status=response.status, headers=response.headers)
    partial.content_length = len(body)
    await partial.prepare(request)
    await partial.write(body[: len(body) // 2])
    transport.abort()
    return partial
