"""Query parameters of the ``/mirror/v1/`` endpoints, read as the upstream reads its own."""

from __future__ import annotations

from aiohttp import web

from mirror.errors import InvalidArgument


def single_value(request: web.Request, name: str) -> str:
    """The value of ``name`` ('' when absent); given twice is INVALID_ARGUMENT, as upstream."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidArgument(f"invalid {name}: given more than once")
    return values[0] if values else ""
