"""JSON answers serialised with orjson (and pre-built JSON bytes passed through)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON_CONTENT_TYPE = "application/json"


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """An answer with ``data`` as compact JSON; ``orjson.Fragment`` values are embedded verbatim."""
    return raw_json_response(orjson.dumps(data), status=status)


def raw_json_response(body: bytes, *, status: int = 200) -> web.Response:
    """An answer whose JSON body is already built."""
    return web.Response(body=body, status=status, content_type=JSON_CONTENT_TYPE)
