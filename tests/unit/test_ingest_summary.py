"""The pass summary: totals, failure, the JSON keys the CLI promises."""

from __future__ import annotations

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
