"""The storage dashboard: ``/`` and its static files, read-only views of the JSON endpoints.

The page is plain HTML, CSS and JavaScript from ``mirror/api/static/`` (charts
are SVG drawn by the script; nothing is fetched from another origin, which the
Content-Security-Policy enforces). The data comes from ``/mirror/v1/stats``,
``/mirror/v1/stats/layers`` and ``/mirror/v1/sync``, and from two routes of the
dashboard's own, for what no public endpoint answers in one request:

* ``/dashboard/registries``: every registry that holds images, each with the
  figures ``/mirror/v1/stats?registryId=`` answers;
* ``/dashboard/deletions``: the latest ``registry.image.deleted`` events of the
  outbox, newest first, in the same CloudEvents form as ``/mirror/v1/events``
  (which pages oldest first, so its end is far from a fresh page's reach), and
  ``next``, the cursor from which the page then follows new deletions live on
  ``/mirror/v1/events/stream`` (read with ``fetch``, which can send the token).

The page and its files are public paths: they hold no data. The data routes
are not: when API tokens are configured, the script asks for one and sends it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from mirror.api.appkeys import POOL, PUBLIC_PATHS
from mirror.api.events_feed import head as outbox_head
from mirror.api.jsonbody import json_response
from mirror.events.envelope import OutboxEvent, to_structured
from mirror.model import EventType, ScopeKind
from mirror.stats.queries import fetch_scopes, fetch_stats

STATIC_DIR = Path(__file__).parent / "static"
REGISTRIES_PATH = "/dashboard/registries"
DELETIONS_PATH = "/dashboard/deletions"
# The chart shows the largest few; the answer is bounded however many registries there are.
MAX_REGISTRIES = 1000
DELETIONS_SHOWN = 10
# Deletions are looked for among this many latest events: a bounded backward scan of
# the outbox's primary key, whatever its size (event data is stored out of line).
DELETIONS_WINDOW = 100_000

# payload: the stored JSON text is embedded as it is, never parsed and re-dumped;
# outbox_events: image.created, blob and tag payloads may be derived (sql/100, 101).
SELECT_LATEST_OF_TYPE = """
SELECT id, event_id, topic, key, type, source, time, payload AS data
FROM outbox_events
WHERE type = $1 AND id > (SELECT coalesce(max(id), 0) FROM outbox) - $2
ORDER BY id DESC
LIMIT $3
"""
STATIC_PREFIX = "/static/"
INDEX_FILE = "dashboard.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
# Everything from this origin, nothing from anywhere else; no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def add_dashboard_routes(app: web.Application) -> None:
    """Serve the dashboard at ``/`` and its files under ``/static/``; mark them public."""
    files = _static_files()
    for name, path in files.items():
        app.router.add_get(STATIC_PREFIX + name, _file_handler(path), name=f"static:{name}")
    app.router.add_get("/", _file_handler(STATIC_DIR / INDEX_FILE), name="dashboard")
    app.router.add_get(REGISTRIES_PATH, get_registries, name="dashboard:registries")
    app.router.add_get(DELETIONS_PATH, get_deletions, name="dashboard:deletions")
    public = app.get(PUBLIC_PATHS)
    if public is None:
        public = set()
        app[PUBLIC_PATHS] = public
    public.add("/")
    public.update(STATIC_PREFIX + name for name in files)


async def get_registries(request: web.Request) -> web.Response:
    """Every registry that holds images, with its dedup figures (at most ``MAX_REGISTRIES``)."""
    pool = request.app[POOL]
    registries = []
    for scope in (await fetch_scopes(pool, ScopeKind.REGISTRY))[:MAX_REGISTRIES]:
        figures = (await fetch_stats(pool, scope)).to_json()
        figures.pop("scope", None)
        registries.append({"registryId": scope.id, **figures})
    return json_response({"registries": registries})


async def get_deletions(request: web.Request) -> web.Response:
    """The latest image deletions, newest first (CloudEvents JSON, as the feed gives them)."""
    async with (
        request.app[POOL].acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await conn.fetch(
            SELECT_LATEST_OF_TYPE, EventType.IMAGE_DELETED.value, DELETIONS_WINDOW, DELETIONS_SHOWN
        )
        cursor = await outbox_head(conn)
    events = [to_structured(OutboxEvent.from_row(row)) for row in rows]
    # next: where the page's stream of new deletions starts (/mirror/v1/events/stream).
    return json_response({"events": events, "next": str(cursor)})


def _static_files() -> dict[str, Path]:
    """The dashboard's files by name; a fixed set known at start (no path from a request)."""
    return {
        path.name: path
        for path in sorted(STATIC_DIR.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def _file_handler(path: Path) -> Handler:
    body = path.read_bytes()
    content_type = CONTENT_TYPES[path.suffix]

    async def serve_file(request: web.Request) -> web.Response:
        response = web.Response(body=body, headers={"Content-Type": content_type})
        # Small files, a local tool: always revalidate, so an upgrade shows at once.
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if path.suffix == ".html":
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return serve_file
