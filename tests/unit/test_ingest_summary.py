"""The pass summary: totals, failure, the JSON keys the CLI promises."""

from __future__ import annotations

from mirror.exit_codes import ExitCode
from mirror.ingest.summary import IngestSummary, ScopeResult, WalkStatus


def test_summary_adds_up_scopes_and_has_the_promised_keys() -> None:
    summary = IngestSummary.of(
        [
            ScopeResult(
                "folder:f1",
                WalkStatus.COMPLETE,
                pages=2,
                images=1500,
                created=10,
                updated=2,
                deleted=1,
            ),
            ScopeResult(
                "registry:r", WalkStatus.FAILED, pages=1, images=100, errors=1, error="HTTP 503"
            ),
            ScopeResult("registry:s", WalkStatus.SKIPPED),
        ],
        seconds=2.0,
    )
    data = summary.to_json()
    assert {"images", "created", "updated", "deleted", "pages", "seconds", "errors"} <= data.keys()
    assert (data["images"], data["created"], data["updated"], data["deleted"]) == (1600, 10, 2, 1)
    assert (data["pages"], data["errors"], data["imagesPerSecond"]) == (3, 1, 800.0)
    assert summary.failed
    assert [s["status"] for s in data["scopes"]] == ["complete", "failed", "skipped"]
    assert data["scopes"][1]["error"] == "HTTP 503"
    ok = IngestSummary.of([ScopeResult("folder:f1", WalkStatus.CANCELLED)], 0.0)
    assert not ok.failed and ok.to_json()["imagesPerSecond"] == 0.0


def _summary(*statuses: WalkStatus, database_error: str | None = None) -> IngestSummary:
    results = [ScopeResult(f"folder:f{i}", status) for i, status in enumerate(statuses)]
    return IngestSummary.of(results, 1.0, database_error)


def test_exit_code_is_0_only_when_every_scope_was_walked_completely() -> None:
    C, F, X, S = (
        WalkStatus.COMPLETE,
        WalkStatus.FAILED,
        WalkStatus.CANCELLED,
        WalkStatus.SKIPPED,
    )
    assert _summary(C, C).exit_code == ExitCode.OK == 0
    assert _summary(C, S).exit_code == ExitCode.HELD_ELSEWHERE == 4
    assert _summary(S, X).exit_code == ExitCode.CANCELLED == 5
    assert _summary(X, F, S).exit_code == ExitCode.FAILED == 1
    assert _summary(C, F, database_error="refused").exit_code == ExitCode.DATABASE == 3
    data = _summary(C, F, database_error="refused").to_json()
    assert (data["exitCode"], data["databaseError"]) == (3, "refused")
    assert "databaseError" not in _summary(C).to_json()


def test_a_suspect_walk_and_unchecked_candidates_show_in_the_json() -> None:
    suspect = ScopeResult(
        "folder:f1",
        WalkStatus.FAILED,
        images=4000,
        errors=1,
        error="suspect walk, nothing deleted: …",
        suspect="the walk listed 4000 of the 19840 images the index holds for the scope",
        unchecked=15840,
    )
    data = IngestSummary.of([suspect, ScopeResult("folder:f2", WalkStatus.COMPLETE)], 1.0)
    first, second = data.to_json()["scopes"]
    assert first["suspect"].startswith("the walk listed 4000") and first["unchecked"] == 15840
    assert "suspect" not in second and "unchecked" not in second
    assert data.failed
