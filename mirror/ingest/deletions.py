"""Deletion detection after a complete walk: candidates, upstream confirmation, deletion.

Invariant 1 (no false deletions) lives here. This runs only after a walk saw
every page of its scope. A candidate is an indexed image of the scope that the
walk did not see; it is deleted only when an upstream Get answers NOT_FOUND.
A candidate the Get still finds stays (a paging anomaly: offset tokens shift
when images are deleted during the walk); one whose Get fails stays too and is
counted as an error, to be checked again after the next complete walk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from mirror.errors import UpstreamError
from mirror.ingest.merge import delete_images
from mirror.model import Scope, ScopeKind

log = logging.getLogger(__name__)

CONFIRM_BATCH = 200
REASON_UPSTREAM_GONE = "upstream-gone"

CREATE_MISSING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_missing (id text PRIMARY KEY);
TRUNCATE ingest_missing;
"""
DROP_MISSING = "DROP TABLE IF EXISTS ingest_missing"

_NOT_SEEN = "NOT EXISTS (SELECT 1 FROM ingest_walk_seen AS s WHERE s.id = i.id)"
# A folder's images: stamped by a folder walk, or in a registry known to be in it
# (images first indexed by a registry walk). Broad is safe: each candidate is
# confirmed upstream before anything is deleted.
FIND_MISSING: dict[ScopeKind, str] = {
    ScopeKind.FOLDER: f"""
INSERT INTO ingest_missing (id)
SELECT i.id FROM images AS i WHERE i.folder_id = $1 AND {_NOT_SEEN}
UNION
SELECT i.id FROM images AS i
WHERE i.registry_id IN (SELECT registry_id FROM registries WHERE folder_id = $1) AND {_NOT_SEEN}
""",
    ScopeKind.REGISTRY: f"""
INSERT INTO ingest_missing (id)
SELECT i.id FROM images AS i WHERE i.registry_id = $1 AND {_NOT_SEEN}
""",
    ScopeKind.REPOSITORY: f"""
INSERT INTO ingest_missing (id)
SELECT i.id FROM images AS i WHERE i.name = $1 AND {_NOT_SEEN}
""",
}
NEXT_MISSING = "SELECT id FROM ingest_missing WHERE id > $1 ORDER BY id LIMIT $2"

GetImage = Callable[[str], Awaitable[dict[str, Any] | None]]


@dataclass(slots=True)
class DeletionOutcome:
    candidates: int = 0
    deleted: int = 0
    anomalies: int = 0
    errors: int = 0
    unchecked: int = 0  # candidates left for the next walk after the checks were abandoned


async def confirm_and_delete(
    conn: asyncpg.Connection,
    scope: Scope,
    get_image: GetImage,
    *,
    keep_lease: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
    batch: int = CONFIRM_BATCH,
    origin: dict[str, Any] | None = None,
) -> DeletionOutcome:
    """Delete the scope's indexed images that the walk (in ``ingest_walk_seen``) did not see
    and that the upstream confirms gone. Requires the walk's connection."""
    outcome = DeletionOutcome()
    await conn.execute(CREATE_MISSING)
    try:
        status = await conn.execute(FIND_MISSING[scope.kind], scope.id)
        outcome.candidates = int(status.rsplit(" ", 1)[-1])
        if outcome.candidates:
            log.info(
                "%s: %d indexed image(s) not seen in the walk; confirming upstream",
                scope,
                outcome.candidates,
            )
        last = ""
        while outcome.candidates:
            if stop is not None and stop.is_set():
                break
            ids = [r["id"] for r in await conn.fetch(NEXT_MISSING, last, batch)]
            if not ids:
                break
            last = ids[-1]
            answers = await asyncio.gather(*(get_image(i) for i in ids), return_exceptions=True)
            gone: list[str] = []
            for image_id, answer in zip(ids, answers, strict=True):
                if isinstance(answer, UpstreamError):
                    outcome.errors += 1
                    log.debug("%s: could not confirm %s upstream: %s", scope, image_id, answer)
                elif isinstance(answer, BaseException):
                    raise answer
                elif answer is None:
                    gone.append(image_id)
                else:
                    outcome.anomalies += 1
                    log.info(
                        "%s: %s was not listed but exists upstream (paging anomaly)",
                        scope,
                        image_id,
                    )
            if all(isinstance(a, UpstreamError) for a in answers):
                # A whole batch failed: the upstream is in trouble. Stop rather than send
                # thousands of doomed Gets; the next complete walk checks them again.
                outcome.unchecked = outcome.candidates - outcome.deleted - outcome.anomalies
                log.warning(
                    "%s: a whole batch of deletion checks failed; %d candidate(s) left unchecked",
                    scope,
                    outcome.unchecked,
                )
                break
            if gone:
                async with conn.transaction():
                    result = await delete_images(conn, gone, REASON_UPSTREAM_GONE, origin=origin)
                outcome.deleted += result.deleted
            if keep_lease is not None:
                await keep_lease()
    finally:
        await conn.execute(DROP_MISSING)
    if outcome.errors:
        log.warning("%s: %d deletion check(s) failed upstream", scope, outcome.errors)
    return outcome
