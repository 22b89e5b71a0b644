"""Deletion detection after a complete walk: candidates, the guard, upstream confirmation.

Invariant 1 (no false deletions) lives here. This runs only after a walk saw
every page of its scope. A candidate is an indexed image of the scope that the
walk did not see.

1. **The guard.** A walk that listed fewer than ``guard`` (``MIRROR_DELETE_GUARD``,
   0.5) of the images the index holds for the scope, or that ended on an empty
   page, is *suspect* when it leaves more than ``GUARD_FLOOR`` candidates: it
   sends no Get and deletes nothing; the next walk that is not suspect does.
2. **Confirmation.** A candidate is deleted only when the upstream itself answers
   NOT_FOUND to a Get (``UpstreamClient.get_image`` returns None only for HTTP 404
   with the API's JSON error, code 5). A candidate the Get still finds stays (a
   paging anomaly: offset tokens shift when images are deleted during the walk);
   one whose Get got no well-formed answer stays too and is counted as an error,
   to be checked again after the next complete walk. At most ``confirm_max``
   Gets (``MIRROR_DELETE_CONFIRM_MAX``) go out per walk, paced by the client's
   rate limit; the candidates beyond are left for the next pass.
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
from mirror.model import Scope, ScopeKind, folder_registry_numbers, registry_number

log = logging.getLogger(__name__)

CONFIRM_BATCH = 200
REASON_UPSTREAM_GONE = "upstream-gone"
DEFAULT_GUARD = 0.5
DEFAULT_CONFIRM_MAX = 1000
# A walk missing this many images or fewer is never suspect: confirming them costs a
# few Gets, and small scopes must be able to lose most of their images.
GUARD_FLOOR = 10

CREATE_MISSING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_missing (id text PRIMARY KEY);
TRUNCATE ingest_missing;
"""
DROP_MISSING = "DROP TABLE IF EXISTS ingest_missing"

_NOT_SEEN = "NOT EXISTS (SELECT 1 FROM ingest_walk_seen AS s WHERE s.id = i.id)"
_FOLDER_REGISTRIES = folder_registry_numbers("$1")
_REPOSITORY_REGISTRY = registry_number("split_part($1, '/', 1)")
# A folder's images: stamped by a folder walk, or in a registry known to be in it
# (images first indexed by a registry walk). Broad is safe: each candidate is
# confirmed upstream before anything is deleted.
FIND_MISSING: dict[ScopeKind, str] = {
    ScopeKind.FOLDER: f"""
INSERT INTO ingest_missing (id)
SELECT i.id FROM images AS i WHERE i.folder_id = $1 AND {_NOT_SEEN}
UNION
SELECT i.id FROM images AS i
WHERE i.registry IN ({_FOLDER_REGISTRIES}) AND {_NOT_SEEN}
""",
    ScopeKind.REGISTRY: f"""
INSERT INTO ingest_missing (id)
SELECT i.id FROM images AS i WHERE i.registry = {registry_number("$1")} AND {_NOT_SEEN}
""",
    # A repository is named <registryId>/<path>: its images are a range of the
    # (registry, name, ...) List indexes (there is no index led by name).
    ScopeKind.REPOSITORY: f"""
INSERT INTO ingest_missing (id)
SELECT i.id FROM images AS i
WHERE i.registry = {_REPOSITORY_REGISTRY} AND i.name = $1 AND {_NOT_SEEN}
""",
}
# Whether the index holds any image of the scope, as FIND_MISSING would find them.
HOLDS_ANY: dict[ScopeKind, str] = {
    ScopeKind.FOLDER: f"""
SELECT EXISTS (SELECT 1 FROM images WHERE folder_id = $1)
    OR EXISTS (SELECT 1 FROM images WHERE registry IN ({_FOLDER_REGISTRIES}))
""",
    ScopeKind.REGISTRY: f"SELECT EXISTS (SELECT 1 FROM images WHERE registry = {registry_number('$1')})",
    ScopeKind.REPOSITORY: f"""
SELECT EXISTS (SELECT 1 FROM images
               WHERE registry = {_REPOSITORY_REGISTRY} AND name = $1)
""",
}
NEXT_MISSING = "SELECT id FROM ingest_missing WHERE id > $1 ORDER BY id LIMIT $2"
# How many ids the walk recorded as seen, and how many distinct: the difference is
# images listed twice on different pages of the walk.
WALK_SEEN_COUNTS = "SELECT count(*) AS total, count(DISTINCT id) AS distinct FROM ingest_walk_seen"

GetImage = Callable[[str], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class WalkFacts:
    """What the walk saw, for the guard: distinct images listed, and whether its last
    page was empty."""

    listed: int
    ended_empty: bool = False


@dataclass(slots=True)
class DeletionOutcome:
    candidates: int = 0
    deleted: int = 0
    anomalies: int = 0
    errors: int = 0
    unchecked: int = 0  # candidates left for the next walk (guard, cap, or abandoned checks)
    suspect: str | None = None  # why the walk was judged suspect (then nothing was checked)
    first_error: str | None = None  # the first failed check's error, for the report


def suspect_reason(facts: WalkFacts, candidates: int, guard: float) -> str | None:
    """Why a walk that left ``candidates`` unseen must not delete, or None."""
    if guard <= 0 or candidates <= GUARD_FLOOR:
        return None
    held = facts.listed + candidates
    if facts.listed < guard * held:
        return (
            f"the walk listed {facts.listed} of the {held} images the index holds for the scope"
            f" (fewer than MIRROR_DELETE_GUARD={guard:g} of them)"
        )
    if facts.ended_empty:
        return f"the walk ended on an empty page with {candidates} indexed images not listed"
    return None


async def holds_images(conn: asyncpg.Connection, scope: Scope) -> bool:
    """Whether the index holds any image of ``scope`` (a few index probes).

    A walk that started on a scope holding none (its first mirror) has nothing to
    sweep: every image of the scope in the index at its end is one it listed, or one
    another writer added meanwhile, which the next walk's sweep checks."""
    return bool(await conn.fetchval(HOLDS_ANY[scope.kind], scope.id))


async def walk_seen_counts(conn: asyncpg.Connection) -> tuple[int, int]:
    """(ids recorded as seen, distinct ids) in this walk; requires the walk's connection."""
    row = await conn.fetchrow(WALK_SEEN_COUNTS)
    return int(row["total"]), int(row["distinct"])


async def confirm_and_delete(
    conn: asyncpg.Connection,
    scope: Scope,
    get_image: GetImage,
    *,
    facts: WalkFacts | None = None,
    guard: float = DEFAULT_GUARD,
    confirm_max: int = DEFAULT_CONFIRM_MAX,
    keep_lease: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
    batch: int = CONFIRM_BATCH,
    origin: dict[str, Any] | None = None,
) -> DeletionOutcome:
    """Delete the scope's indexed images that the walk (in ``ingest_walk_seen``) did not see
    and that the upstream confirms gone. Requires the walk's connection.

    ``facts`` (what the walk listed) arms the guard; without them it is off."""
    outcome = DeletionOutcome()
    await conn.execute(CREATE_MISSING)
    try:
        status = await conn.execute(FIND_MISSING[scope.kind], scope.id)
        outcome.candidates = int(status.rsplit(" ", 1)[-1])
        if facts is not None:
            outcome.suspect = suspect_reason(facts, outcome.candidates, guard)
        if outcome.suspect is not None:
            outcome.unchecked = outcome.candidates
            log.warning(
                "%s: suspect walk, nothing deleted and no confirmation sent: %s",
                scope,
                outcome.suspect,
            )
            return outcome
        if outcome.candidates:
            log.info(
                "%s: %d indexed image(s) not seen in the walk; confirming upstream",
                scope,
                outcome.candidates,
            )
        last = ""
        checked = 0
        while outcome.candidates:
            if stop is not None and stop.is_set():
                break
            room = min(batch, confirm_max - checked)
            if room <= 0:
                outcome.unchecked = outcome.candidates - checked
                log.info(
                    "%s: %d confirmation Get(s) sent (MIRROR_DELETE_CONFIRM_MAX); "
                    "%d candidate(s) wait for the next pass",
                    scope,
                    checked,
                    outcome.unchecked,
                )
                break
            ids = [r["id"] for r in await conn.fetch(NEXT_MISSING, last, room)]
            if not ids:
                break
            last = ids[-1]
            checked += len(ids)
            answers = await asyncio.gather(*(get_image(i) for i in ids), return_exceptions=True)
            gone: list[str] = []
            for image_id, answer in zip(ids, answers, strict=True):
                if isinstance(answer, UpstreamError):
                    outcome.errors += 1
                    if outcome.first_error is None:
                        outcome.first_error = f"{image_id}: {answer}"
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
                outcome.unchecked = outcome.candidates - checked
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
