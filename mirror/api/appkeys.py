"""The typed keys of the API application's state.

Handlers read their resources through these keys (``request.app[POOL]``);
``create_app`` in ``mirror.api.app`` fills them before the app serves. They
live apart from the app factory so that route modules (stats, dashboard) can
import them without an import cycle.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from mirror.api.image_list import ImageReader
from mirror.api.operations import DeleteTracker, OperationsUpstream
from mirror.api.page_keys import PageKeys
from mirror.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
UPSTREAM: web.AppKey[OperationsUpstream] = web.AppKey("upstream")
PAGE_KEYS = web.AppKey("page_keys", PageKeys)
IMAGES = web.AppKey("images", ImageReader)
DELETES = web.AppKey("deletes", DeleteTracker)
# Paths answered without a token even when MIRROR_API_TOKENS is set (probes, the
# schema). Route modules may add to it while the app is built (the dashboard does).
PUBLIC_PATHS: web.AppKey[set[str]] = web.AppKey("public_paths")
