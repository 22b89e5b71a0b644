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
