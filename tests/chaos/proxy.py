"""A small corrupting reverse proxy for the chaos suite: between the ingest and the simulator.

It forwards every request to the upstream as it came (method, path, query,
``Authorization`` and ``X-Request-Id``) and, depending on its faults, corrupts
the answer the way a misbehaving ingress, proxy or upstream does. Each fault
counts in ``landed`` every time it actually changed an answer, so a test can
prove its fault landed instead of hoping it did.

List faults (``list_fault``) act on ``GET /container-registry/v1/images``; Get
faults (``get_fault``) on ``GET /container-registry/v1/images/{id}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

IMAGES = "/container-registry/v1/images"
FORWARDED_HEADERS = ("Authorization", "X-Request-Id", "Accept")


class ListFault(StrEnum):
    NONE = "none"
    TRUNCATED_ITEM = "truncated-item"  # one image of a page becomes {"id": …}
    WRONG_TYPES = "wrong-types"  # int64 fields as JSON numbers, a tag as a number
    EMPTY_PAGE = "empty-page"  # the second page of a walk answers {} (200)
    TOKEN_LOOP = "token-loop"  # the third page's nextPageToken is the second page's token
    DROP_IMAGES = "drop-images"  # every page loses one image
    DUPLICATE_IMAGES = "duplicate-images"  # a page repeats one of its images and the last page's
    CUT_BODY = "cut-body"  # the second page's body is cut in half (Content-Length to match)


class GetFault(StrEnum):
    NONE = "none"
    HTML_404 = "html-404"  # an ingress's HTML 404 page
    CODE5_500 = "code5-500"  # HTTP 500 whose JSON body says code 5 (NOT_FOUND)


class OperationFault(StrEnum):
    NONE = "none"
    DONE_WITHOUT_RESULT = "done-without-result"  # "done": true, but no response nor error


class ChaosProxy:
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.list_fault = ListFault.NONE
        self.get_fault = GetFault.NONE
        self.operation_fault = OperationFault.NONE
        self.landed: Counter[str] = Counter()  # fault -> answers it changed
        self.requests: Counter[str] = Counter()  # "list" / "get" / "other" -> requests seen
        self.dropped: list[str] = []  # ids of the images DROP_IMAGES took out
        # listings (query without page token) whose pages EMPTY_PAGE emptied: a walk
        # that reads ahead asks for more than one page after the first, so the count
        # of emptied answers is one or more per walk
        self.emptied: set[str] = set()
        self.url = ""
        self._session: aiohttp.ClientSession | None = None
        self._last_image: dict[str, Any] = {}  # per listing (query without page token)

    def off(self) -> None:
        self.list_fault, self.get_fault = ListFault.NONE, GetFault.NONE
        self.operation_fault = OperationFault.NONE

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        path = request.rel_url.path
        if request.method == "GET" and path == IMAGES:
            kind = "list"
        elif request.method == "GET" and path.startswith(IMAGES + "/"):
            kind = "get"
        else:
            kind = "other"
        self.requests[kind] += 1
        if kind == "get" and self.get_fault is not GetFault.NONE:
            return self._get_fault()
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        async with self._session.request(
            request.method,
            self.upstream_url + str(request.rel_url),
            headers=headers,
            data=await request.read() or None,
        ) as upstream:
            body = await upstream.read()
            status, content_type = upstream.status, upstream.content_type
            request_id = upstream.headers.get("X-Request-Id", "")
        if kind == "list" and status == 200 and self.list_fault is not ListFault.NONE:
            body = self._corrupt_list(request, body)
        if (
            request.method == "GET"
            and path.startswith("/operations/")
            and status == 200
            and self.operation_fault is OperationFault.DONE_WITHOUT_RESULT
        ):
            operation = orjson.loads(body)
            operation["done"] = True
            operation.pop("response", None)
            operation.pop("error", None)
            body = orjson.dumps(operation)
            self.landed[self.operation_fault.value] += 1
        response = web.Response(status=status, body=body, content_type=content_type)
        if request_id:
            response.headers["X-Request-Id"] = request_id
        return response

    # -- Get ------------------------------------------------------------------------------

    def _get_fault(self) -> web.Response:
        fault = self.get_fault
        self.landed[fault.value] += 1
        if fault is GetFault.HTML_404:
            return web.Response(
                status=404,
                text="<html><body><h1>404 Not Found</h1>nginx</body></html>",
                content_type="text/html",
            )
        body = {"code": 5, "message": "Image not found", "details": []}
        return web.Response(status=500, body=orjson.dumps(body), content_type="application/json")

    # -- List -----------------------------------------------------------------------------

    def _corrupt_list(self, request: web.Request, body: bytes) -> bytes:
        fault = self.list_fault
        token = request.query.get("pageToken", "")
        listing = "&".join(f"{k}={v}" for k, v in sorted(request.query.items()) if k != "pageToken")
        data = orjson.loads(body)
        images: list[dict[str, Any]] = data.get("images", [])
        changed = False
        if fault is ListFault.CUT_BODY and token and not self.landed[fault.value]:
            self.landed[fault.value] += 1
            return body[: len(body) // 2]
        if fault is ListFault.EMPTY_PAGE and token and images:
            # every page after the first ends the walk: an empty answer, no next token
            self.landed[fault.value] += 1
            self.emptied.add(request.query.get("folderId") or request.query.get("registryId", ""))
            return b"{}"
        if fault is ListFault.TOKEN_LOOP and token and "nextPageToken" in data:
            data["nextPageToken"] = token  # the walk asked for this one already
            changed = True
        elif fault is ListFault.TRUNCATED_ITEM and token and images:
            images[len(images) // 2] = {"id": images[len(images) // 2]["id"]}
            changed = True
        elif fault is ListFault.WRONG_TYPES and token and images:
            victim = images[len(images) // 2]
            victim["compressedSize"] = int(victim["compressedSize"])
            victim["config"]["size"] = int(victim["config"]["size"])
            changed = True
        elif fault is ListFault.DROP_IMAGES and len(images) > 1:
            self.dropped.append(images.pop(len(images) // 2)["id"])
            changed = True
        elif fault is ListFault.DUPLICATE_IMAGES and images:
            previous = self._last_image.get(listing)
            self._last_image[listing] = images[-1]
            images.insert(len(images) // 2, dict(images[0]))  # twice on this page
            if token and previous is not None:
                images.insert(0, previous)  # and the previous page's last one again
            changed = True
        if not changed:
            return body
        self.landed[fault.value] += 1
        return orjson.dumps(data)

    # -- serving --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@asynccontextmanager
async def serving(upstream_url: str) -> AsyncIterator[ChaosProxy]:
    proxy = ChaosProxy(upstream_url)
    server = TestServer(proxy.app(), host="127.0.0.1", port=0)
    async with aiohttp.ClientSession() as session:
        proxy._session = session
        await server.start_server()
        proxy.url = str(server.make_url("")).rstrip("/")
        try:
            yield proxy
        finally:
            await server.close()
