"""``GET /mirror/v1/sync``: each scope's walks, from ``scopes`` and its latest ``sync_runs`` row.

Per scope: the last complete walk (when, how long, how many images), the
current generation, the latest error if it came after the last complete walk,
``lagSeconds``, the age of the index for that scope (now minus the last
complete walk), ``walking`` while a walk holds the scope's lease, and the
latest run's counters. A run the deletion guard judged suspect carries
``suspect`` (why; it deleted nothing), and ``unchecked`` counts the deletion
candidates it left for the next pass. Configured scopes (``MIRROR_SCOPES``) that were never walked are
listed too, without figures.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mirror.api.appkeys import POOL, SETTINGS
from mirror.api.jsonbody import json_response
from mirror.events.envelope import format_time

SYNC_PATH = "/mirror/v1/sync"

SELECT_SCOPES = """
SELECT s.scope, s.generation, s.last_started_at, s.last_complete_at, s.last_duration_s,
       s.last_images, s.last_error, s.last_error_at, s.lease_until > now() AS walking,
       extract(epoch FROM now() - s.last_complete_at)::float8 AS lag_s,
       r.status AS run_status, r.started_at AS run_started_at, r.finished_at AS run_finished_at,
       r.pages AS run_pages, r.images AS run_images, r.created AS run_created,
       r.updated AS run_updated, r.deleted AS run_deleted, r.anomalies AS run_anomalies,
       r.error AS run_error, r.suspect AS run_suspect, r.unchecked AS run_unchecked
FROM scopes AS s
LEFT JOIN LATERAL (
    SELECT * FROM sync_runs WHERE sync_runs.scope = s.scope ORDER BY id DESC LIMIT 1
) AS r ON true
ORDER BY s.scope
"""


async def get_sync(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(SELECT_SCOPES)
    scopes = [scope_json(row) for row in rows]
    walked = {row["scope"] for row in rows}
    for scope in request.app[SETTINGS].scopes:
        if str(scope) not in walked:
            scopes.append({"scope": str(scope), "generation": "0"})
    return json_response({"scopes": scopes} if scopes else {})


def scope_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"scope": row["scope"], "generation": str(row["generation"])}
    if row["walking"]:
        out["walking"] = True
    if row["last_started_at"] is not None:
        out["lastStartedAt"] = format_time(row["last_started_at"])
    if row["last_complete_at"] is not None:
        out["lastCompleteAt"] = format_time(row["last_complete_at"])
        out["lagSeconds"] = round(max(0.0, row["lag_s"]), 3)
    if row["last_duration_s"] is not None:
        out["lastDurationSeconds"] = round(row["last_duration_s"], 3)
    if row["last_images"] is not None:
        out["lastImages"] = str(row["last_images"])
    failing = row["last_error_at"] is not None and (
        row["last_complete_at"] is None or row["last_error_at"] > row["last_complete_at"]
    )
    if failing:
        out["lastError"] = row["last_error"] or ""
        out["lastErrorAt"] = format_time(row["last_error_at"])
    if row["run_status"] is not None:
        run: dict[str, Any] = {"status": row["run_status"]}
        run["startedAt"] = format_time(row["run_started_at"])
        if row["run_finished_at"] is not None:
            run["finishedAt"] = format_time(row["run_finished_at"])
        for key, column in (
            ("pages", "run_pages"),
            ("images", "run_images"),
            ("created", "run_created"),
            ("updated", "run_updated"),
            ("deleted", "run_deleted"),
            ("anomalies", "run_anomalies"),
        ):
            run[key] = str(row[column])
        if row["run_error"]:
            run["error"] = row["run_error"]
        if row["run_suspect"]:
            run["suspect"] = row["run_suspect"]
        if row["run_unchecked"]:
            run["unchecked"] = str(row["run_unchecked"])
        out["lastRun"] = run
    return out


def add_sync_routes(app: web.Application) -> None:
    app.router.add_get(SYNC_PATH, get_sync, name="mirror:sync")
