"""What a pass did: one ``ScopeResult`` per scope, added up into an ``IngestSummary``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mirror.exit_codes import ExitCode


class WalkStatus(StrEnum):
    COMPLETE = "complete"  # every page seen; deletions confirmed
    # the walk, a page's check or a deletion check failed, or the walk was suspect
    # (``ScopeResult.suspect``); nothing deleted by the failure
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped (SIGTERM) between pages; nothing deleted
    SKIPPED = "skipped"  # another ingest process holds the scope's lease


@dataclass(frozen=True, slots=True)
class ScopeResult:
    scope: str
    status: WalkStatus
    pages: int = 0
    images: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    anomalies: int = 0
    errors: int = 0
    seconds: float = 0.0
    error: str | None = None
    suspect: str | None = None  # why the deletion guard held this walk's deletions back
    unchecked: int = 0  # deletion candidates left for the next pass

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scope": self.scope,
            "status": self.status.value,
            "pages": self.pages,
            "images": self.images,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "anomalies": self.anomalies,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            out["error"] = self.error
        if self.suspect:
            out["suspect"] = self.suspect
        if self.unchecked:
            out["unchecked"] = self.unchecked
        return out


@dataclass(frozen=True, slots=True)
class IngestSummary:
    scopes: tuple[ScopeResult, ...] = field(default=())
    seconds: float = 0.0
    # Set when a walk failed and the database did not answer at the end of the pass.
    database_error: str | None = None

    @classmethod
    def of(
        cls, results: Sequence[ScopeResult], seconds: float, database_error: str | None = None
    ) -> IngestSummary:
        return cls(tuple(results), seconds, database_error)

    def _sum(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.scopes)

    @property
    def images(self) -> int:
        return self._sum("images")

    @property
    def created(self) -> int:
        return self._sum("created")

    @property
    def updated(self) -> int:
        return self._sum("updated")

    @property
    def deleted(self) -> int:
        return self._sum("deleted")

    @property
    def pages(self) -> int:
        return self._sum("pages")

    @property
    def anomalies(self) -> int:
        return self._sum("anomalies")

    @property
    def errors(self) -> int:
        return self._sum("errors")

    @property
    def failed(self) -> bool:
        return any(r.status is WalkStatus.FAILED for r in self.scopes)

    @property
    def exit_code(self) -> ExitCode:
        """The status of `mirror ingest --once`: 0 only when every scope was walked
        completely; otherwise the worst of: the database went away (3), a walk failed
        or did not finish for another reason (1), a stop signal (5), a lease held by
        another process (4)."""
        if self.database_error is not None:
            return ExitCode.DATABASE
        statuses = {r.status for r in self.scopes}
        if statuses - {WalkStatus.COMPLETE, WalkStatus.CANCELLED, WalkStatus.SKIPPED}:
            return ExitCode.FAILED
        if WalkStatus.CANCELLED in statuses:
            return ExitCode.CANCELLED
        if WalkStatus.SKIPPED in statuses:
            return ExitCode.HELD_ELSEWHERE
        return ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "images": self.images,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "anomalies": self.anomalies,
            "imagesPerSecond": round(self.images / self.seconds, 1) if self.seconds > 0 else 0.0,
            "scopes": [r.to_json() for r in self.scopes],
            "exitCode": int(self.exit_code),
        }
        if self.database_error is not None:
            out["databaseError"] = self.database_error
        return out
