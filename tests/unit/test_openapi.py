"""The OpenAPI document names every route of the API (the dashboard's and the document's own excepted)."""

from __future__ import annotations

from mirror.api.app import create_app
from mirror.api.openapi import OPENAPI
from mirror.settings import Settings

UNDOCUMENTED_PREFIXES = ("/static/", "/dashboard/")
UNDOCUMENTED = {"/", "/openapi.json"}


def routes() -> set[tuple[str, str]]:
    app = create_app(Settings())
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        template = info.get("formatter") or info.get("path") or ""
        if route.method == "HEAD" or template in UNDOCUMENTED:
            continue
        if template.startswith(UNDOCUMENTED_PREFIXES):
            continue
        found.add((route.method.lower(), template))
    return found


def test_every_api_route_is_in_the_openapi_document() -> None:
    documented = {(method, path) for path, item in OPENAPI["paths"].items() for method in item}
    served = routes()
    assert ("get", "/mirror/v1/events/stream") in served
    assert served - documented == set()
    assert documented - served == set()


def test_the_event_stream_is_documented_as_server_sent_events() -> None:
    operation = OPENAPI["paths"]["/mirror/v1/events/stream"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"text/event-stream"}
    names = {p["name"] for p in operation["parameters"]}
    assert {"after", "Last-Event-ID", "type", "subject", "source"} <= names
