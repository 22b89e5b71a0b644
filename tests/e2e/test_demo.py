"""`mirror demo` end to end: a newcomer's first command, as a real process.

It comes up on a fresh data dir, mirrors the simulator, answers List and stats
like the cloud, shows the simulator's churn arriving as events on
/mirror/v1/events, and stops cleanly on Ctrl-C (SIGINT) within a bounded time
with nothing left running: no child process, no embedded PostgreSQL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.demo_process import DemoProcess, pid_alive, process_group, run_demo

pytestmark = pytest.mark.timeout(400)

IMAGES = 5000
CHURN_TIMEOUT_S = 90.0
EVENT_PAGE = 1000
CHANGE_TYPES = {"registry.image.created", "registry.image.updated", "registry.image.deleted"}


def feed_end(demo: DemoProcess) -> tuple[str, list[dict[str, Any]]]:
    """Page through /mirror/v1/events to its end: the cursor there and every event read."""
    cursor = ""
    events: list[dict[str, Any]] = []
    for _ in range(10_000):  # bounded: a few dozen pages here
        params = {"limit": EVENT_PAGE}
        if cursor:
            params["after"] = cursor
        page = demo.get("/mirror/v1/events", **params)
        batch = page.get("events", [])
        events.extend(batch)
        cursor = page.get("next") or cursor
        if len(batch) < EVENT_PAGE:
            return cursor, events
    raise AssertionError("the event feed did not end")


def test_demo_mirrors_serves_streams_and_stops_cleanly(tmp_path: Path) -> None:
    with run_demo(tmp_path, "--images", str(IMAGES), "--interval", "1", "--churn", "20") as demo:
        # The summary's last line: the dedup lines come after two queries (a race under load).
        demo.wait_for_output("re-walks the simulator every")
        out = demo.output()
        assert f"{demo.url}/" in out  # the dashboard URL is printed
        assert "dedup:" in out and "curl -s" in out

        # List answers like the cloud: a page of a folder's images with a next page token.
        folders = demo.folder_ids()
        assert len(folders) == 2
        page = demo.get("/container-registry/v1/images", folderId=folders[0], pageSize=10)
        assert len(page["images"]) == 10
        assert page["nextPageToken"]
        image = page["images"][0]
        assert image["id"].startswith("crp") and len(image["id"]) == 20
        assert demo.get(f"/container-registry/v1/images/{image['id']}")["id"] == image["id"]

        # Stats: the whole simulated registry is in, and dedup saves bytes.
        stats = demo.get("/mirror/v1/stats")
        assert int(stats["images"]) >= IMAGES * 0.9
        assert int(stats["storedBytes"]) < int(stats["logicalBytes"])
        assert stats["dedupRatio"] > 1.0
        assert int(stats["savedBytes"]) == int(stats["logicalBytes"]) - int(stats["storedBytes"])

        # The first mirror's events are in the feed; churn adds new ones after them.
        cursor, first = feed_end(demo)
        assert sum(e["type"] == "registry.image.created" for e in first) >= IMAGES * 0.9
        assert cursor
        deadline = time.monotonic() + CHURN_TIMEOUT_S
        changes: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not changes:
            time.sleep(1.0)
            page = demo.get("/mirror/v1/events", after=cursor, limit=EVENT_PAGE)
            changes = [e for e in page.get("events", []) if e["type"] in CHANGE_TYPES]
        assert changes, "no churn event arrived in the feed within the time limit"
        event = changes[0]
        assert event["specversion"] == "1.0"
        assert event["subject"].startswith("crp")
        assert event["id"] and event["source"] and event["time"]

        # Ctrl-C: everything stops, in bounded time, nothing left running.
        postmaster = demo.postmaster_pid()
        assert postmaster is not None and pid_alive(postmaster)
        code = demo.interrupt()
        assert code == 0, demo.output()[-3000:]
        assert not pid_alive(postmaster), "the embedded PostgreSQL outlived the demo"
        assert process_group(demo.process.pid) == [], "a process of the demo outlived it"
        assert not (demo.data_dir / "pgdata" / "postmaster.pid").exists()
        assert "demo stopped" in demo.output()
        assert "Traceback" not in demo.output()


# A first pass long enough that a Ctrl-C provably lands in it (minutes at memory speed).
LONG_FIRST_PASS_IMAGES = 300_000
MID_WALK_TIMEOUT_S = 120.0


def test_ctrl_c_during_the_first_mirror_says_the_index_is_partial(tmp_path: Path) -> None:
    args = ("--images", str(LONG_FIRST_PASS_IMAGES), "--churn", "0")
    with run_demo(tmp_path, *args) as demo:
        # Mid-walk, provably: pages are committed (the index has images) and the
        # first pass has not ended (its summary line is not printed).
        deadline = time.monotonic() + MID_WALK_TIMEOUT_S
        indexed = 0
        while time.monotonic() < deadline and indexed == 0:
            indexed = int(demo.get("/mirror/v1/stats")["images"])
            if indexed == 0:
                time.sleep(0.2)
        assert indexed > 0, "no page was committed in time:\n" + demo.output()[-3000:]
        assert "first mirror" not in demo.output(), "the first pass ended before the test's Ctrl-C"

        code = demo.interrupt()
        out = demo.output()
        assert code == 0, out[-3000:]
        stopped = [line for line in out.splitlines() if line.startswith("first mirror")]
        assert len(stopped) == 1, out[-3000:]
        assert stopped[0].startswith("first mirror stopped by Ctrl-C after "), stopped
        assert stopped[0].endswith(" images; the index is partial"), stopped
        walked = int(stopped[0].split(" after ")[1].split(" images")[0].replace(",", ""))
        assert indexed <= walked < LONG_FIRST_PASS_IMAGES, (indexed, walked)
        # Nothing that belongs to a finished first mirror: no figures, no commands to try.
        assert "try:" not in out and "dedup:" not in out and "Ctrl-C to stop." not in out
        assert "demo stopped" in out and "Traceback" not in out
