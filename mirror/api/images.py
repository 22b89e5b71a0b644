"""The upstream-compatible handlers: List, Get and Delete of images, and Operations.

Same paths, parameters, validation, JSON and errors as the cloud's REST API
(``mirror.listing`` holds the request contract shared with the simulator).

A Delete is passed to the upstream only for an image the index holds: a
malformed id is INVALID_ARGUMENT and an id the index does not hold is
NOT_FOUND, both answered here without calling the upstream. The mirror vouches
only for what it indexes, as its Get does; an image pushed since the last walk
is deleted through the cloud itself (or after the next walk).
"""

from __future__ import annotations

from aiohttp import web

from mirror.api.actor import actor_of
from mirror.api.appkeys import DELETES, IMAGES
from mirror.api.image_list import ImageReader
from mirror.api.jsonbody import json_response, raw_json_response
from mirror.errors import NotFound
from mirror.listing import parse_list_request, validate_resource_id

IMAGES_PATH = "/container-registry/v1/images"
IMAGE_PATH = IMAGES_PATH + "/{imageId}"
OPERATION_PATH = "/operations/{operationId}"


async def list_images(request: web.Request) -> web.Response:
    list_request = parse_list_request(request.query.items())
    return raw_json_response(await request.app[IMAGES].list_page(list_request))


async def get_image(request: web.Request) -> web.Response:
    image_id = validate_resource_id("imageId", request.match_info["imageId"])
    return raw_json_response(await image_doc(request.app[IMAGES], image_id))


async def image_doc(images: ImageReader, image_id: str) -> bytes:
    """The image's upstream JSON; ``NotFound`` when the index lacks it (REST and gRPC Get)."""
    doc = await images.get(image_id)
    if doc is None:
        raise NotFound(f"Image {image_id} not found")
    return doc


async def delete_image(request: web.Request) -> web.Response:
    image_id = validate_resource_id("imageId", request.match_info["imageId"])
    if not await request.app[IMAGES].holds(image_id):
        raise NotFound(f"Image {image_id} not found")
    return json_response(await request.app[DELETES].start_delete(image_id, actor_of(request)))


async def get_operation(request: web.Request) -> web.Response:
    operation_id = validate_resource_id("operationId", request.match_info["operationId"])
    return raw_json_response(await request.app[DELETES].get(operation_id))


def add_image_routes(app: web.Application) -> None:
    app.router.add_get(IMAGES_PATH, list_images, name="images:list")
    app.router.add_get(IMAGE_PATH, get_image, name="images:get")
    app.router.add_delete(IMAGE_PATH, delete_image, name="images:delete")
    app.router.add_get(OPERATION_PATH, get_operation, name="operations:get")
