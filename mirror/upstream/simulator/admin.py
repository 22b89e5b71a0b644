"""The admin API under ``/_simulator``: look inside the upstream and change it, off the cloud paths.

No faults, latency or token apply here (see ``docs/SIMULATOR.md`` for the reference).

    GET    /_simulator/state                      counts, scopes, churn, faults
    GET    /_simulator/repositories?registryId=   repositories of a registry with image counts
    GET    /_simulator/ids[?folderId=|registryId=|repositoryName=]
                                                  live image ids, one a line, ascending
    POST   /_simulator/images                     push: {"repositoryName": ..., "tags": [...]}
    POST   /_simulator/images/{imageId}/tags      {"add": [...], "remove": [...]} (adding moves a tag)
    DELETE /_simulator/images/{imageId}           delete at once, no Operation
    GET    /_simulator/faults                     the run-time fault settings
    PATCH  /_simulator/faults                     change some of them, e.g. {"errorRate": 1}
    GET    /_simulator/churn                      {"rate": ..., "applied": ...}
    PUT    /_simulator/churn                      {"rate": 25}
    GET    /_simulator/changes?after=SEQ&limit=N  what changed, oldest first
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from mirror.errors import InvalidArgument
from mirror.model import Scope, ScopeKind
from mirror.upstream.simulator.faults import ADMIN_PREFIX
from mirror.upstream.simulator.runtime import SIMULATOR, Simulator


def add_admin_routes(app: web.Application) -> None:
    p = ADMIN_PREFIX
    app.router.add_get(p, index)
    app.router.add_get(f"{p}/state", state)
    app.router.add_get(f"{p}/repositories", repositories)
    app.router.add_get(f"{p}/ids", ids)
    app.router.add_post(f"{p}/images", push_image)
    app.router.add_post(f"{p}/images/{{imageId}}/tags", retag_image)
    app.router.add_delete(f"{p}/images/{{imageId}}", delete_image)
    app.router.add_get(f"{p}/faults", get_faults)
    app.router.add_patch(f"{p}/faults", patch_faults)
    app.router.add_get(f"{p}/churn", get_churn)
    app.router.add_put(f"{p}/churn", put_churn)
    app.router.add_get(f"{p}/changes", changes)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


ENDPOINTS = [
    ("GET", "/state", "counts, scopes, churn, faults"),
    ("GET", "/repositories?registryId=ID", "repositories of a registry with image counts"),
    (
        "GET",
        "/ids[?folderId=|registryId=|repositoryName=]",
        "live image ids, one a line, ascending",
    ),
    ("POST", "/images", 'push: {"repositoryName": ..., "tags": [...]}'),
    ("POST", "/images/{imageId}/tags", '{"add": [...], "remove": [...]} (adding moves a tag)'),
    ("DELETE", "/images/{imageId}", "delete at once, no Operation"),
    ("GET", "/faults", "the run-time fault settings"),
    ("PATCH", "/faults", 'change some of them, e.g. {"errorRate": 1}'),
    ("GET", "/churn", '{"rate": ..., "applied": ...}'),
    ("PUT", "/churn", '{"rate": 25}'),
    ("GET", "/changes?after=SEQ&limit=N", "what changed, oldest first"),
]


async def index(request: web.Request) -> web.Response:
    endpoints = [
        {"method": method, "path": ADMIN_PREFIX + path, "does": does}
        for method, path, does in ENDPOINTS
    ]
    return json_response({"endpoints": endpoints})


async def state(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    registry, model = sim.registry, sim.registry.model
    folders = []
    for folder, folder_id in enumerate(model.folder_ids):
        registries = []
        for r in model.folder_registries(folder):
            registry_id = model.registry_ids[r]
            registries.append(
                {
                    "id": registry_id,
                    "images": str(registry.count(Scope(ScopeKind.REGISTRY, registry_id))),
                    "repositories": str(sum(1 for _ in registry.repositories(registry_id))),
                }
            )
        folders.append(
            {
                "id": folder_id,
                "images": str(registry.count(Scope(ScopeKind.FOLDER, folder_id))),
                "registries": registries,
            }
        )
    return json_response(
        {
            "seed": str(model.seed),
            "images": str(registry.count()),
            "generatedImages": str(model.images),
            "pushed": str(registry.counters.pushed),
            "retagged": str(registry.counters.retagged),
            "deleted": str(registry.counters.deleted),
            "lastSeq": str(registry.last_seq),
            "churn": {"rate": sim.churn.rate, "applied": str(sim.churn.applied)},
            "operations": {"pending": sim.operations.pending},
            "faults": sim.faults.to_json(),
            "folders": folders,
        }
    )


async def repositories(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    registry_id = request.query.get("registryId", "")
    if sim.registry.model.registry_index(registry_id) is None:
        raise InvalidArgument("registryId: not a registry of this simulator")
    repos = [
        {"name": repo.name, "images": str(sim.registry.repo_image_count(repo.index))}
        for repo in sim.registry.repositories(registry_id)
    ]
    return json_response({"repositories": repos})


async def ids(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    scope = _scope(request)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    batch: list[str] = []
    for image_id in sim.registry.ids(scope):
        batch.append(image_id)
        if len(batch) >= 10_000:
            await response.write(("\n".join(batch) + "\n").encode())
            batch.clear()
    if batch:
        await response.write(("\n".join(batch) + "\n").encode())
    await response.write_eof()
    return response


async def push_image(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    body = await _body(request)
    name = body.get("repositoryName")
    if not isinstance(name, str):
        raise InvalidArgument("repositoryName: required, a string")
    tags = _string_list(body, "tags") if "tags" in body else None
    image = sim.registry.push(name, tags)
    return json_response(image.to_json(), status=201)


async def retag_image(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    body = await _body(request)
    image = sim.registry.retag(
        request.match_info["imageId"],
        add=_string_list(body, "add"),
        remove=_string_list(body, "remove"),
    )
    return json_response(image.to_json())


async def delete_image(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    image = sim.registry.delete(request.match_info["imageId"])
    return json_response(image.to_json())


async def get_faults(request: web.Request) -> web.Response:
    return json_response(request.app[SIMULATOR].faults.to_json())


async def patch_faults(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    sim.faults.update(await _body(request))
    return json_response(sim.faults.to_json())


async def get_churn(request: web.Request) -> web.Response:
    return json_response(_churn_json(request.app[SIMULATOR]))


async def put_churn(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    rate = (await _body(request)).get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
        raise InvalidArgument("rate: required, a number of changes a second, 0 or more")
    sim.churn.rate = float(rate)
    return json_response(_churn_json(sim))


async def changes(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    after = _int_param(request, "after", 0)
    limit = min(_int_param(request, "limit", 1000), 10_000)
    found = sim.registry.changes_after(after, limit)
    return json_response(
        {"changes": [c.to_json() for c in found], "lastSeq": str(sim.registry.last_seq)}
    )


def _churn_json(sim: Simulator) -> dict[str, Any]:
    return {"rate": sim.churn.rate, "applied": str(sim.churn.applied)}


def _scope(request: web.Request) -> Scope | None:
    for param, kind in (
        ("repositoryName", ScopeKind.REPOSITORY),
        ("registryId", ScopeKind.REGISTRY),
        ("folderId", ScopeKind.FOLDER),
    ):
        value = request.query.get(param)
        if value:
            return Scope(kind, value)
    return None


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidArgument("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object")
    return body


def _string_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{key}: must be a list of strings")
    return value


def _int_param(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        raise InvalidArgument(f"{name}: must be a non-negative integer")
    return int(text)
