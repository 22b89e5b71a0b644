"""A replay upstream for the ingest benchmark: List pages recorded once from the
simulator, served from memory by page index, so that the upstream costs next to
nothing and the figures show the ingest's own bound.

    python -m bench.ingest_replay --from http://127.0.0.1:8000 --port 9000

Records every folder's pages (1000 images each) at start; Get answers from the
recorded images. Only the paths the ingest uses are served.
"""

from __future__ import annotations

import argparse
import urllib.request
from typing import Any

import orjson
from aiohttp import web


def fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=120) as resp:
        return orjson.loads(resp.read())


def record(source: str) -> tuple[dict[str, list[bytes]], dict[str, bytes]]:
    pages: dict[str, list[bytes]] = {}
    images: dict[str, bytes] = {}
    for folder in fetch(source + "/_simulator/state")["folders"]:
        key = folder["id"]
        pages[key] = []
        token = ""
        while True:
            url = f"{source}/container-registry/v1/images?folderId={key}&pageSize=1000"
            body = fetch(url + (f"&pageToken={token}" if token else ""))
            index = len(pages[key])
            token = body.get("nextPageToken", "")
            replay: dict[str, Any] = {"images": body.get("images", [])}
            if token:
                replay["nextPageToken"] = str(index + 1)
            pages[key].append(orjson.dumps(replay))
            for image in body.get("images", []):
                images[image["id"]] = orjson.dumps(image)
            if not token:
                break
    return pages, images


def create_app(pages: dict[str, list[bytes]], images: dict[str, bytes]) -> web.Application:
    async def list_images(request: web.Request) -> web.Response:
        folder = pages.get(request.query.get("folderId", ""), [b"{}"])
        index = int(request.query.get("pageToken") or 0)
        return web.Response(body=folder[index], content_type="application/json")

    async def get_image(request: web.Request) -> web.Response:
        body = images.get(request.match_info["id"])
        if body is None:
            return web.json_response({"code": 5, "message": "not found", "details": []}, status=404)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/container-registry/v1/images", list_images)
    app.router.add_get("/container-registry/v1/images/{id}", get_image)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="the simulator's URL")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    pages, images = record(args.source.rstrip("/"))
    web.run_app(create_app(pages, images), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
