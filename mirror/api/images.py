"""The upstream-compatible handlers: List, Get and Delete of images, and Operations.

Same paths, parameters, validation, JSON and errors as the cloud's REST API
(``mirror.listing`` holds the request contract shared with the simulator).
"""

from __future__ import annotations

from aiohttp import web

from mirror.api.actor import actor_of
from mirror.api.appkeys import DELETES, IMAGES
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
    doc = await request.app[IMAGES].get(image_id)
    if doc is None:
        raise NotFound(f"Image {image_id} not found")
    return raw_json_response(doc)


async def delete_image(request: web.Request) -> web.Response:
    image_id = validate_resource_id("imageId", request.match_info["imageId"])
    return json_response(await request.app[DELETES].start_delete(image_id, actor_of(request)))


async def get_operation(request: web.Request) -> web.Response:
    operation_id = validate_resource_id("operationId", request.match_info["operationId"])
    return raw_json_response(await request.app[DELETES].get(operation_id))


def add_image_routes(app: web.Application) -> None:
    app.router.add_get(IMAGES_PATH, list_images, name="images:list")
    app.router.add_get(IMAGE_PATH, get_image, name="images:get")
    app.router.add_delete(IMAGE_PATH, delete_image, name="images:delete")
    app.router.add_get(OPERATION_PATH, get_operation, name="operations:get")
