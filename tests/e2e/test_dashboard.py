"""The storage dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

A `mirror demo` without churn serves a stable index; the page must render the
same figures /mirror/v1/stats, /mirror/v1/stats/layers and /mirror/v1/sync
answer, show an image deleted through the API among the latest deletions, and
fetch nothing from another origin. A screenshot goes to /tmp for a human look.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.demo_process import DemoProcess, run_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/registry-mirror-dashboard.png")
PAGE_TIMEOUT_MS = 30_000
DELETE_TIMEOUT_S = 60.0
IMAGES = 3000

pytestmark = pytest.mark.timeout(400)

UNIT_BYTES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4, "PiB": 1024**5}


def require_chromium() -> None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium; `make browser`)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    require_chromium()
    tmp_path = tmp_path_factory.mktemp("dashboard")
    # No churn and no re-walk while the test reads: the figures hold still.
    with run_demo(
        tmp_path, "--images", str(IMAGES), "--churn", "0", "--interval", "3600"
    ) as running:
        running.wait_for_output("first mirror:")
        yield running
        running.interrupt()


def delete_image(demo: DemoProcess) -> str:
    """Delete one image through the local API and wait until its deletion is in the feed."""
    folder = demo.folder_ids()[0]
    image_id = demo.get("/container-registry/v1/images", folderId=folder, pageSize=1)["images"][0][
        "id"
    ]
    request = urllib.request.Request(
        f"{demo.url}/container-registry/v1/images/{image_id}", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    deadline = time.monotonic() + DELETE_TIMEOUT_S
    while time.monotonic() < deadline:
        if _deleted_in_feed(demo, image_id):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the deletion of {image_id} did not reach the event feed")
    # and the demo's stats folder has folded it: the figures hold still from here
    while time.monotonic() < deadline:
        if demo.get("/mirror/v1/stats")["behind"]["changes"] == "0":
            return image_id
        time.sleep(0.2)
    raise AssertionError("the stats never caught up with the deletion")


def _deleted_in_feed(demo: DemoProcess, image_id: str) -> bool:
    cursor = ""
    for _ in range(1000):
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["after"] = cursor
        page = demo.get("/mirror/v1/events", **params)
        events = page.get("events", [])
        if any(e["type"] == "registry.image.deleted" and e["subject"] == image_id for e in events):
            return True
        if len(events) < 1000:
            return False
        cursor = page["next"]
    return False


def parse_bytes(text: str) -> float:
    match = re.fullmatch(r"(-?[0-9.]+) (B|KiB|MiB|GiB|TiB|PiB)", text.strip())
    assert match, f"not a byte figure: {text!r}"
    return float(match.group(1)) * UNIT_BYTES[match.group(2)]


def assert_bytes_shown(text: str, exact: int) -> None:
    """The shown figure rounds the exact one to one decimal of its unit."""
    shown = parse_bytes(text)
    unit = UNIT_BYTES[text.split()[-1]]
    assert abs(shown - exact) <= 0.05 * unit + 1e-9, (text, exact)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            timeout=PAGE_TIMEOUT_MS,
        )
        try:
            yield launched
        finally:
            launched.close()


def test_dashboard_renders_the_api_figures(demo: DemoProcess, browser: Any) -> None:
    deleted = delete_image(demo)
    stats = demo.get("/mirror/v1/stats")
    layers = demo.get("/mirror/v1/stats/layers", limit=10)
    sync = demo.get("/mirror/v1/sync")

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(demo.url + "/")
    page.wait_for_selector('body[data-loaded="true"]')
    page.wait_for_selector('[data-testid="registry-row"]')

    def figure(test_id: str) -> tuple[str, str]:
        element = page.locator(f'[data-testid="{test_id}"]')
        return element.get_attribute("data-value") or "", element.inner_text()

    # Totals: the exact value kept on the element, and the shown text.
    for test_id, key in [
        ("stat-images", "images"),
        ("stat-blobs", "blobs"),
        ("stat-logical-bytes", "logicalBytes"),
        ("stat-compressed-bytes", "compressedBytes"),
        ("stat-stored-bytes", "storedBytes"),
        ("stat-saved-bytes", "savedBytes"),
        ("stat-reclaimable-bytes", "reclaimableBytes"),
    ]:
        value, text = figure(test_id)
        assert value == str(stats[key]), (test_id, value, stats[key])
        if key.endswith("Bytes"):
            assert_bytes_shown(text, int(stats[key]))
        else:
            assert text == f"{int(stats[key]):,}"
    value, text = figure("stat-dedup-ratio")
    assert float(value) == pytest.approx(stats["dedupRatio"])
    assert text == f"{stats['dedupRatio']:.2f}×"
    assert figure("reclaimable-count")[0] == str(layers["reclaimableBlobs"])
    as_of = page.locator('[data-testid="stats-as-of"]')
    assert as_of.get_attribute("data-event-id") == stats["asOf"]["eventId"]
    assert as_of.inner_text() == f"figures as of event {stats['asOf']['eventId']} · up to date"

    # Per registry: every row matches that registry's own stats.
    rows = page.locator('[data-testid="registry-row"]')
    assert rows.count() >= 2
    seen_images = 0
    for i in range(rows.count()):
        row = rows.nth(i)
        registry_id = row.get_attribute("data-registry-id")
        registry = demo.get("/mirror/v1/stats", registryId=registry_id)
        assert row.get_attribute("data-logical-bytes") == registry["logicalBytes"]
        assert row.get_attribute("data-stored-bytes") == registry["storedBytes"]
        seen_images += int(registry["images"])
    assert seen_images == int(stats["images"])  # every registry is on the chart

    # Top shared layers, in the API's order.
    shown = page.locator('[data-testid="layer-row"]')
    expected = layers.get("layers", [])
    assert shown.count() == len(expected) > 0
    for i, layer in enumerate(expected):
        assert shown.nth(i).get_attribute("data-digest") == layer["digest"]
        assert shown.nth(i).get_attribute("data-saved-bytes") == layer["savedBytes"]

    # Sync status: one row per scope, all in sync after the first mirror.
    sync_rows = page.locator('[data-testid="sync-row"]')
    assert sync_rows.count() == len(sync["scopes"])
    for i in range(sync_rows.count()):
        assert sync_rows.nth(i).get_attribute("data-state") == "ok"
    assert page.locator('[data-testid="sync-status"]').get_attribute("data-state") == "ok"

    # The deletion made through the API is among the latest deletions.
    deletions = page.locator('[data-testid="deletion-row"]')
    assert deletions.count() >= 1
    assert deletions.first.get_attribute("data-subject") == deleted

    # A deletion made while the page is open arrives on the event stream, without a reload
    # (the refresh loop loads deletions once; the stream brings the new ones).
    page.wait_for_selector('body[data-deletions-live="true"]')
    live = delete_image(demo)
    page.wait_for_selector(f'[data-testid="deletion-row"][data-subject="{live}"]')
    assert deletions.first.get_attribute("data-subject") == live
    assert any("/mirror/v1/events/stream" in url for url in requests)

    assert page.locator('[data-testid="error-banner"]').is_hidden()
    assert errors == []
    assert requests and all(url.startswith(demo.url + "/") for url in requests), requests
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()


def test_dashboard_files_are_served_with_a_strict_policy(demo: DemoProcess) -> None:
    with urllib.request.urlopen(demo.url + "/", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        policy = response.headers["Content-Security-Policy"]
        html = response.read().decode()
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "http://" not in html and "https://" not in html  # no external resource
    for name in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        with urllib.request.urlopen(demo.url + name, timeout=10) as response:
            assert response.status == 200, name
            assert response.headers["X-Content-Type-Options"] == "nosniff"
