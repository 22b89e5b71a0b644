"""The simulator's aiohttp app: the cloud's REST paths, answered as the cloud answers them.

    GET    /container-registry/v1/images              List (mirror.listing is the contract)
    GET    /container-registry/v1/images/{imageId}    Get
    DELETE /container-registry/v1/images/{imageId}    Delete -> Operation
    GET    /operations/{operationId}                  the Operation service

Errors are the gRPC gateway's ``{"code", "message", "details": [RequestInfo]}``
with the cloud's HTTP status; unknown paths are 404 NOT_FOUND and a wrong
method 501 UNIMPLEMENTED, as a gRPC gateway routes them. Every answer carries
``X-Request-Id``, the id in the error's RequestInfo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from mirror.errors import ApiError, Internal, InvalidArgument, NotFound, Unimplemented
from mirror.listing import parse_list_request, validate_resource_id
from mirror.upstream.simulator.admin import add_admin_routes
from mirror.upstream.simulator.config import SimulatorConfig
from mirror.upstream.simulator.faults import fault_middleware
from mirror.upstream.simulator.paging import list_body, list_page
from mirror.upstream.simulator.runtime import SIMULATOR, Simulator

log = logging.getLogger(__name__)

IMAGES_PATH = "/container-registry/v1/images"
OPERATIONS_PATH = "/operations"


def create_simulator_app(
    config: SimulatorConfig | None = None, *, simulator: Simulator | None = None
) -> web.Application:
    """The simulator as an aiohttp app, from a config (or an already built ``Simulator``)."""
    sim = simulator or Simulator.from_config(config or SimulatorConfig())
    app = web.Application(
        middlewares=[error_middleware, fault_middleware(sim.faults, sim.fault_rng)]
    )
    app[SIMULATOR] = sim
    app.router.add_get(IMAGES_PATH, list_images)
    app.router.add_get(IMAGES_PATH + "/{imageId}", get_image)
    app.router.add_delete(IMAGES_PATH + "/{imageId}", delete_image)
    app.router.add_get(OPERATIONS_PATH + "/{operationId}", get_operation)
    add_admin_routes(app)
    app.cleanup_ctx.append(_background)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIMULATOR]
    churn = asyncio.create_task(sim.churn.run(), name="simulator-churn")
    yield
    churn.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await churn
    sim.operations.close()


# -- the cloud API ------------------------------------------------------------------


async def list_images(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    list_request = parse_list_request(request.query)
    refs, token = await list_page(sim.registry, list_request, sim.faults.page_token_style)
    return web.Response(body=list_body(sim.registry, refs, token), content_type="application/json")


async def get_image(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    image_id = validate_resource_id("imageId", request.match_info["imageId"])
    image = sim.registry.lookup(image_id)
    if image is None:
        raise NotFound(f"Image {image_id} not found")
    return _json(image.to_json())


async def delete_image(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    image_id = validate_resource_id("imageId", request.match_info["imageId"])
    operation = sim.operations.start_delete(image_id, sim.faults.operation_delay)
    return _json(operation.to_json())


async def get_operation(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    operation_id = validate_resource_id("operationId", request.match_info["operationId"])
    operation = sim.operations.get(operation_id)
    if operation is None:
        raise NotFound(f"Operation {operation_id} not found")
    return _json(operation.to_json())


# -- errors --------------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Any error as the upstream's error JSON; an ``X-Request-Id`` on every answer."""
    request_id = str(uuid.uuid4())
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error(exc, request_id)
    except web.HTTPNotFound:
        response = _error(NotFound("Not Found"), request_id)
    except web.HTTPMethodNotAllowed:
        response = _error(Unimplemented("Method Not Allowed"), request_id)
    except web.HTTPRequestEntityTooLarge:
        response = _error(InvalidArgument("Request Entity Too Large"), request_id)
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = _error(
                ApiError.from_code(_code_of_status(exc.status), exc.reason), request_id
            )
        else:
            raise
    except Exception:
        log.exception("simulator: unexpected error on %s %s", request.method, request.path)
        response = _error(Internal("Internal error"), request_id)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


def _error(exc: ApiError, request_id: str) -> web.Response:
    response = _json(exc.to_json(request_id), status=exc.http_status)
    for name, value in getattr(exc, "headers", {}).items():
        response.headers[name] = value
    return response


def _code_of_status(status: int) -> int:
    return {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 501: 12, 503: 14, 504: 4}.get(
        status, 13
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
