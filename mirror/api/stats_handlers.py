"""The dedup statistics under ``/mirror/v1/``: one scope's figures, top layers, one image's usage.

Scope parameters follow the upstream List rules: ``repositoryName`` wins over
``registryId``, which wins over ``folderId``; the ignored ones are still
validated; an empty value counts as absent; a parameter given twice is
INVALID_ARGUMENT. Without any of them the answer covers the whole index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web

from mirror.api.appkeys import POOL
from mirror.api.jsonbody import json_response
from mirror.errors import InvalidArgument, NotFound
from mirror.listing import parse_int64, validate_optional_id, validate_resource_id
from mirror.model import REPOSITORY_NAME_RE, Scope, ScopeKind
from mirror.stats.queries import (
    DEFAULT_LAYERS,
    DEFAULT_RECLAIMABLE,
    DEFAULT_RELATED,
    fetch_image_usage,
    fetch_layer_report,
    fetch_stats,
)

MAX_LIMIT = 1000
_SCOPE_PARAMS = ("repositoryName", "registryId", "folderId")


def _single_values(
    query: Mapping[str, str] | Iterable[tuple[str, str]], names: Iterable[str]
) -> dict[str, str]:
    wanted = set(names)
    pairs = query.items() if isinstance(query, Mapping) else query
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in wanted:
            continue
        if name in given:
            raise InvalidArgument(f"invalid {name}: given more than once")
        given[name] = value
    return given


def parse_scope(given: Mapping[str, str]) -> Scope | None:
    """The scope of a stats request (``None``: the whole index)."""
    for param in ("registryId", "folderId"):
        validate_optional_id(param, given.get(param, ""))
    repository = given.get("repositoryName", "")
    if repository and not REPOSITORY_NAME_RE.fullmatch(repository):
        raise InvalidArgument(
            f"invalid repositoryName: {repository[:60]!r} does not match {REPOSITORY_NAME_RE.pattern}"
        )
    if repository:
        return Scope(ScopeKind.REPOSITORY, repository)
    if given.get("registryId"):
        return Scope(ScopeKind.REGISTRY, given["registryId"])
    if given.get("folderId"):
        return Scope(ScopeKind.FOLDER, given["folderId"])
    return None


def parse_limit(given: Mapping[str, str], param: str, default: int) -> int:
    """An int64 count: absent or 0 means the default; negative or above 1000 is refused."""
    text = given.get(param, "")
    if text == "":
        return default
    value = parse_int64(param, text)
    if value < 0 or value > MAX_LIMIT:
        raise InvalidArgument(f"invalid {param}: must be between 0 and {MAX_LIMIT}")
    return value or default


async def get_stats(request: web.Request) -> web.Response:
    given = _single_values(request.query.items(), _SCOPE_PARAMS)
    stats = await fetch_stats(request.app[POOL], parse_scope(given))
    return json_response(stats.to_json())


async def get_layers(request: web.Request) -> web.Response:
    given = _single_values(request.query.items(), ("limit", "reclaimableLimit"))
    report = await fetch_layer_report(
        request.app[POOL],
        limit=parse_limit(given, "limit", DEFAULT_LAYERS),
        reclaimable_limit=parse_limit(given, "reclaimableLimit", DEFAULT_RECLAIMABLE),
    )
    return json_response(report.to_json())


async def get_image_usage(request: web.Request) -> web.Response:
    image_id = validate_resource_id("imageId", request.match_info["imageId"])
    given = _single_values(request.query.items(), (*_SCOPE_PARAMS, "limit"))
    usage = await fetch_image_usage(
        request.app[POOL],
        image_id,
        parse_scope(given),
        related_limit=parse_limit(given, "limit", DEFAULT_RELATED),
    )
    if usage is None:
        raise NotFound(f"Image {image_id} not found")
    return json_response(usage.to_json())


def add_stats_routes(app: web.Application) -> None:
    """Register ``/mirror/v1/stats``, ``/mirror/v1/stats/layers`` and ``/mirror/v1/images/{imageId}/usage``."""
    app.router.add_get("/mirror/v1/stats", get_stats)
    app.router.add_get("/mirror/v1/stats/layers", get_layers)
    app.router.add_get("/mirror/v1/images/{imageId}/usage", get_image_usage)
