"""The simulator on a real socket: faults, run-time switches, admin API, churn, operations, CLI.

No database needed. The million-image walk runs only with MIRROR_TEST_MILLION=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from mirror.model import Scope, ScopeKind
from mirror.upstream.simulator import (
    PageTokenStyle,
    RunningSimulator,
    SimulatorConfig,
    faults,
    serve_simulator,
)
from mirror.upstream.simulator.churn import Churn
from mirror.upstream.simulator.runtime import Simulator

IMAGES = "/container-registry/v1/images"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _get(
    session: aiohttp.ClientSession, url: str, params: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, dict[str, str], Any]:
    async with session.get(url, params=params, **kwargs) as response:
        body = await response.json(content_type=None) if response.content_length != 0 else None
        return response.status, dict(response.headers), body


async def _send(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as response:
        return response.status, await response.json(content_type=None)


def _folder(upstream: RunningSimulator) -> str:
    return upstream.registry.model.folder_ids[0]


# -- auth -------------------------------------------------------------------------------------


async def test_bearer_token_required(session: aiohttp.ClientSession) -> None:
    async with serve_simulator(SimulatorConfig(images=100, token="s3cret")) as upstream:
        url = upstream.url + IMAGES
        params = {"folderId": _folder(upstream)}
        for headers, status, code in (
            ({}, 401, 16),
            ({"Authorization": "Basic czNjcmV0"}, 401, 16),
            ({"Authorization": "Bearer "}, 401, 16),
            ({"Authorization": "Bearer wrong"}, 403, 7),
            ({"Authorization": "Bearer s3cret"}, 200, None),
            ({"Authorization": "bearer s3cret"}, 200, None),
        ):
            got, _, body = await _get(session, url, params, headers=headers)
            assert got == status, headers
            if code is not None:
                assert body["code"] == code and body["details"][0]["requestId"]
        got, _, _ = await _get(session, upstream.url + "/operations/crp00000000000000000")
        assert got == 401
        got, _, state = await _get(session, upstream.url + "/_simulator/state")
        assert got == 200 and state["faults"]["tokenRequired"] is True
        assert "s3cret" not in str(state)


# -- 429, 5xx, drops, latency -----------------------------------------------------------------


async def test_throttling_answers_429_with_retry_after(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(images=100, throttle_rate=1.0, retry_after=2.0)
    async with serve_simulator(config) as upstream:
        status, headers, body = await _get(
            session, upstream.url + IMAGES, {"folderId": _folder(upstream)}
        )
        assert status == 429 and headers["Retry-After"] == "2"
        assert body["code"] == 8 and body["details"][0]["@type"].endswith("RequestInfo")
        status, _ = await _send(
            session, "PATCH", upstream.url + "/_simulator/faults", {"throttleRate": 0}
        )
        assert status == 200
        status, _, _ = await _get(session, upstream.url + IMAGES, {"folderId": _folder(upstream)})
        assert status == 200


async def test_a_5xx_storm_toggled_mid_walk(session: aiohttp.ClientSession) -> None:
    """A walk survives a storm switched on and off at run time; it sees every image once."""
    config = SimulatorConfig(images=2_000, page_token_style=PageTokenStyle.CURSOR)
    async with serve_simulator(config) as upstream:
        folder = _folder(upstream)
        expected = list(upstream.registry.ids(Scope(ScopeKind.FOLDER, folder)))
        seen: list[str] = []
        token, pages, failures = "", 0, 0
        while True:
            if pages == 2 and failures == 0:
                await _send(
                    session, "PATCH", upstream.url + "/_simulator/faults", {"errorRate": 1.0}
                )
            params = {
                "folderId": folder,
                "pageSize": "100",
                **({"pageToken": token} if token else {}),
            }
            status, _, body = await _get(session, upstream.url + IMAGES, params)
            if status != 200:
                assert status in (500, 503) and body["code"] in (13, 14)
                failures += 1
                if failures == 5:
                    await _send(
                        session, "PATCH", upstream.url + "/_simulator/faults", {"errorRate": 0}
                    )
                continue
            pages += 1
            seen += [image["id"] for image in body.get("images", [])]
            token = body.get("nextPageToken", "")
            if not token:
                break
        assert failures == 5
        assert seen == expected


async def test_error_rate_is_a_share(session: aiohttp.ClientSession) -> None:
    async with serve_simulator(
        SimulatorConfig(images=50, error_rate=0.5, fault_seed=3)
    ) as upstream:
        statuses = [
            (await _get(session, upstream.url + IMAGES, {"folderId": _folder(upstream)}))[0]
            for _ in range(60)
        ]
        failed = sum(1 for s in statuses if s >= 500)
        assert 10 < failed < 50
        assert set(statuses) <= {200, 500, 503}


async def test_dropped_connections(session: aiohttp.ClientSession) -> None:
    """Dropped: no answer at all, or a body cut short; both are client errors."""
    async with serve_simulator(
        SimulatorConfig(images=500, drop_rate=1.0, fault_seed=1)
    ) as upstream:
        kinds = set()
        for _ in range(12):
            with pytest.raises(aiohttp.ClientError) as caught:
                async with aiohttp.ClientSession() as fresh:
                    params = {"folderId": _folder(upstream), "pageSize": "1000"}
                    async with fresh.get(upstream.url + IMAGES, params=params) as response:
                        await response.read()
            kinds.add(type(caught.value).__name__)
        assert {"ServerDisconnectedError", "ClientPayloadError"} <= kinds
        await _send(session, "PATCH", upstream.url + "/_simulator/faults", {"dropRate": 0})
        status, _, _ = await _get(session, upstream.url + IMAGES, {"folderId": _folder(upstream)})
        assert status == 200


async def test_latency_is_added(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    waited: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds: float) -> None:
        waited.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(faults, "sleep", recording_sleep)
    async with serve_simulator(
        SimulatorConfig(images=50, latency_ms=80, latency_sigma=0)
    ) as upstream:
        status, _, _ = await _get(session, upstream.url + IMAGES, {"folderId": _folder(upstream)})
        assert status == 200 and waited == [0.08]
        await _get(session, upstream.url + "/_simulator/state")  # the admin API has no latency
        assert waited == [0.08]


async def test_bad_fault_settings_are_refused(session: aiohttp.ClientSession) -> None:
    async with serve_simulator(SimulatorConfig(images=50)) as upstream:
        url = upstream.url + "/_simulator/faults"
        for body in (
            {"errorRate": 2},
            {"errorRate": 0.6, "dropRate": 0.6},
            {"nope": 1},
            {"pageTokenStyle": "x"},
        ):
            status, answer = await _send(session, "PATCH", url, body)
            assert status == 400 and answer["code"] == 3, body
        status, faults = await _send(
            session, "PATCH", url, {"pageTokenStyle": "cursor", "latencyMs": 1}
        )
        assert status == 200 and faults["pageTokenStyle"] == "cursor" and faults["latencyMs"] == 1


# -- page tokens under deletion ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "shift"), [(PageTokenStyle.OFFSET, 3), (PageTokenStyle.CURSOR, 0)], ids=str
)
async def test_deletions_mid_walk_shift_offset_pages_only(
    session: aiohttp.ClientSession, style: PageTokenStyle, shift: int
) -> None:
    """Offset tokens skip as many images as were deleted before them; cursor tokens skip none."""
    async with serve_simulator(SimulatorConfig(images=1_000, page_token_style=style)) as upstream:
        registry_id = upstream.registry.model.registry_ids[0]
        before = list(upstream.registry.ids(Scope(ScopeKind.REGISTRY, registry_id)))
        params = {"registryId": registry_id, "pageSize": "10"}
        _, _, first = await _get(session, upstream.url + IMAGES, params)
        assert [i["id"] for i in first["images"]] == before[:10]
        for image in first["images"][:3]:
            status, _ = await _send(
                session, "DELETE", f"{upstream.url}/_simulator/images/{image['id']}"
            )
            assert status == 200
        _, _, second = await _get(
            session, upstream.url + IMAGES, {**params, "pageToken": first["nextPageToken"]}
        )
        assert [i["id"] for i in second["images"]] == before[10 + shift : 20 + shift]


async def test_pushes_mid_walk_repeat_offset_pages(session: aiohttp.ClientSession) -> None:
    async with serve_simulator(SimulatorConfig(images=1_000)) as upstream:
        registry = upstream.registry
        repo = next(
            r for r in registry.repositories(registry.model.registry_ids[0]) if r.count >= 12
        )
        params = {"repositoryName": repo.name, "pageSize": "10", "orderBy": "created_at desc"}
        _, _, first = await _get(session, upstream.url + IMAGES, params)
        status, pushed = await _send(
            session, "POST", upstream.url + "/_simulator/images", {"repositoryName": repo.name}
        )
        assert status == 201
        _, _, second = await _get(
            session, upstream.url + IMAGES, {**params, "pageToken": first["nextPageToken"]}
        )
        # the newest image went in front: the last image of page one is seen again
        assert second["images"][0]["id"] == first["images"][-1]["id"]
        assert pushed["id"] not in {i["id"] for i in first["images"] + second["images"]}


# -- admin API -------------------------------------------------------------------------------------


async def test_admin_push_retag_delete_and_the_change_log(session: aiohttp.ClientSession) -> None:
    async with serve_simulator(SimulatorConfig(images=500)) as upstream:
        admin = upstream.url + "/_simulator"
        registry_id = upstream.registry.model.registry_ids[0]
        status, image = await _send(
            session,
            "POST",
            admin + "/images",
            {"repositoryName": f"{registry_id}/qa/probe", "tags": ["v1"]},
        )
        assert (
            status == 201 and image["tags"] == ["v1"] and image["name"] == f"{registry_id}/qa/probe"
        )
        status, _, got = await _get(session, f"{upstream.url}{IMAGES}/{image['id']}")
        assert status == 200 and got == image
        status, second = await _send(
            session,
            "POST",
            admin + "/images",
            {"repositoryName": f"{registry_id}/qa/probe", "tags": ["v2"]},
        )
        status, moved = await _send(
            session, "POST", f"{admin}/images/{second['id']}/tags", {"add": ["v1"]}
        )
        assert status == 200 and moved["tags"] == ["v2", "v1"]
        _, _, first_now = await _get(session, f"{upstream.url}{IMAGES}/{image['id']}")
        assert "tags" not in first_now  # untagged: the field is omitted
        status, _ = await _send(session, "DELETE", f"{admin}/images/{image['id']}")
        assert status == 200
        status, _, missing = await _get(session, f"{upstream.url}{IMAGES}/{image['id']}")
        assert status == 404 and missing["code"] == 5
        status, _, log = await _get(session, admin + "/changes", {"after": "0"})
        assert [(c["type"], c["imageId"]) for c in log["changes"]] == [
            ("push", image["id"]),
            ("push", second["id"]),
            ("retag", image["id"]),
            ("retag", second["id"]),
            ("delete", image["id"]),
        ]
        assert log["changes"][2]["tagsRemoved"] == ["v1"] and log["changes"][3]["tagsAdded"] == [
            "v1"
        ]
        status, _, later = await _get(session, admin + "/changes", {"after": log["lastSeq"]})
        assert later["changes"] == []
        for method, path, body, code in (
            ("POST", "/images", {"repositoryName": "crp00000000000000000/x"}, 404),
            ("POST", "/images", {"tags": ["x"]}, 400),
            ("POST", f"/images/{second['id']}/tags", {"add": ["bad tag"]}, 400),
            ("DELETE", f"/images/{image['id']}", None, 404),
        ):
            status, _ = await _send(session, method, admin + path, body)
            assert status == code, (method, path)


async def test_admin_state_repositories_and_ids(session: aiohttp.ClientSession) -> None:
    async with serve_simulator(
        SimulatorConfig(images=3_000, folders=3, registries_per_folder=2)
    ) as upstream:
        admin = upstream.url + "/_simulator"
        _, _, state = await _get(session, admin + "/state")
        assert state["images"] == "3000" and len(state["folders"]) == 3
        assert sum(int(f["images"]) for f in state["folders"]) == 3000
        registry_id = state["folders"][0]["registries"][0]["id"]
        _, _, repos = await _get(session, admin + "/repositories", {"registryId": registry_id})
        assert sum(int(r["images"]) for r in repos["repositories"]) == int(
            state["folders"][0]["registries"][0]["images"]
        )
        async with session.get(admin + "/ids", params={"registryId": registry_id}) as response:
            ids = (await response.text()).split()
        assert ids == list(upstream.registry.ids(Scope(ScopeKind.REGISTRY, registry_id)))
        async with session.get(admin + "/ids") as response:
            assert len((await response.text()).split()) == 3000
        _, _, index = await _get(session, admin)
        patch = {"method": "PATCH", "path": "/_simulator/faults"}
        assert any(patch.items() <= endpoint.items() for endpoint in index["endpoints"])


async def test_churn_applies_its_rate_on_its_clock() -> None:
    """200 changes a second: 100 once its clock has moved half a second, no more."""
    registry = Simulator.from_config(SimulatorConfig(images=2_000)).registry
    now = [0.0]
    reads: list[float] = []

    def clock() -> float:
        reads.append(now[0])
        return now[0]

    churn = Churn(registry, 200, random.Random(1), clock=clock)
    task = asyncio.create_task(churn.run())
    try:
        await _until(lambda: bool(reads), "the churn took its start time")
        now[0] = 0.5
        await _until(lambda: reads.count(0.5) >= 2, "the churn read the moved clock twice")
        assert churn.applied == 100
        assert registry.counters.pushed + registry.counters.retagged + registry.counters.deleted
        churn.rate = 0
        await asyncio.wait_for(churn.idle.wait(), 10)
        now[0] = 10.0
        await asyncio.sleep(0)
        assert churn.applied == 100  # at rate 0 time passing changes nothing
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the loop until ``condition`` holds (bounded: a hang is a failure)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never: {what}")


async def test_churn_changes_the_registry_until_stopped(session: aiohttp.ClientSession) -> None:
    async with serve_simulator(SimulatorConfig(images=2_000, churn=200)) as upstream:
        churner = upstream.simulator.churn
        await _until(lambda: churner.applied >= 30, "the churn applied 30 changes")
        status, churn = await _send(session, "PUT", upstream.url + "/_simulator/churn", {"rate": 0})
        assert status == 200 and churn["rate"] == 0
        applied = int(churn["applied"])
        await asyncio.wait_for(churner.idle.wait(), 10)  # parked: nothing more can change
        _, _, state = await _get(session, upstream.url + "/_simulator/state")
        assert int(state["churn"]["applied"]) == applied
        registry = upstream.registry
        assert registry.counters.pushed and registry.counters.deleted and registry.counters.retagged
        assert registry.count() == 2_000 + registry.counters.pushed - registry.counters.deleted
        # tags stay unique in every repository churn touched
        for change in registry.changes_after(0, limit=10_000):
            image = registry.get(change.image_id)
            if image is None:
                continue
            tags = [
                t
                for i in registry.all_images(Scope(ScopeKind.REPOSITORY, image.name))
                for t in i.tags
            ]
            assert len(tags) == len(set(tags))
        status, _ = await _send(session, "PUT", upstream.url + "/_simulator/churn", {"rate": -1})
        assert status == 400


async def _list_ids(session: aiohttp.ClientSession, url: str, folder: str) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        params = {"folderId": folder, "pageSize": "100", "pageToken": token}
        status, _, body = await _get(session, url + IMAGES, params)
        assert status == 200, body
        ids += [image["id"] for image in body.get("images", [])]
        token = body.get("nextPageToken", "")
        if not token:
            return ids


async def test_under_churn_get_finds_what_list_shows(session: aiohttp.ClientSession) -> None:
    """An image Get answers NOT_FOUND for is gone for good: no later List shows it.

    Churn pushes images and deletes some of them again before a listing of their
    folder catches up with either change (while the other folder is walked, say).
    """
    async with serve_simulator(SimulatorConfig(images=3_000, seed=7)) as upstream:
        folders = upstream.registry.model.folder_ids
        await _send(session, "PUT", upstream.url + "/_simulator/churn", {"rate": 400})
        not_found: set[str] = set()
        gets = 0
        for _ in range(3):
            for folder in folders:
                for image_id in await _list_ids(session, upstream.url, folder):
                    status, _, _ = await _get(session, f"{upstream.url}{IMAGES}/{image_id}")
                    assert status in (200, 404)
                    gets += 1
                    if status == 404:
                        not_found.add(image_id)
        status, churn = await _send(session, "PUT", upstream.url + "/_simulator/churn", {"rate": 0})
        assert status == 200 and int(churn["applied"]) > 100
        registry = upstream.registry
        assert registry.counters.deleted and registry.counters.pushed
        listed = [i for folder in folders for i in await _list_ids(session, upstream.url, folder)]
        assert gets > 9_000
        assert not_found.isdisjoint(listed)
        assert len(listed) == len(set(listed)) == registry.count()
        assert all(registry.get(image_id) is not None for image_id in listed)


# -- operations ----------------------------------------------------------------------------------


async def test_operation_is_done_after_the_delay_or_fails_if_the_image_went_meanwhile(
    session: aiohttp.ClientSession,
) -> None:
    async with serve_simulator(SimulatorConfig(images=200, operation_delay=0.3)) as upstream:
        first, second = list(upstream.registry.ids())[:2]
        status, operation = await _send(session, "DELETE", f"{upstream.url}{IMAGES}/{first}")
        assert status == 200 and operation["done"] is False and "response" not in operation
        done = await _until_done(session, upstream.url, operation["id"], image_id=first)
        assert done["response"]["@type"].endswith("protobuf.Empty")
        assert done["modifiedAt"] >= done["createdAt"]
        status, _, _ = await _get(session, f"{upstream.url}{IMAGES}/{first}")
        assert status == 404

        # Give the second operation all the time it needs to find its image gone.
        await _send(session, "PATCH", upstream.url + "/_simulator/faults", {"operationDelay": 5})
        status, other = await _send(session, "DELETE", f"{upstream.url}{IMAGES}/{second}")
        await _send(session, "DELETE", f"{upstream.url}/_simulator/images/{second}")
        _, _, pending = await _get(session, f"{upstream.url}/operations/{other['id']}")
        assert pending["done"] is False, "the image must go while the operation is pending"
        failed = await _until_done(session, upstream.url, other["id"], limit=30)
        assert failed["error"]["code"] == 5 and "response" not in failed


async def _until_done(
    session: aiohttp.ClientSession,
    base: str,
    operation_id: str,
    *,
    image_id: str | None = None,
    limit: float = 10,
) -> dict[str, Any]:
    """Poll the operation until it is done; while it is not, ``image_id`` must still answer."""
    deadline = time.monotonic() + limit
    while True:
        if image_id is not None:
            image_status, _, _ = await _get(session, f"{base}{IMAGES}/{image_id}")
        _, _, operation = await _get(session, f"{base}/operations/{operation_id}")
        if operation["done"]:
            return dict(operation)
        # read before the operation's status: a 404 here with the operation not done
        # would be an image gone before its Delete finished
        if image_id is not None:
            assert image_status == 200, "the image stays until the operation is done"
        assert time.monotonic() < deadline, f"operation {operation_id} not done in {limit} s"
        await asyncio.sleep(0.02)


# -- the command -----------------------------------------------------------------------------------


def test_mirror_simulate_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mirror",
            "simulate",
            "--images",
            "5000",
            "--port",
            "0",
            "--seed",
            "9",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = []
        assert process.stdout is not None
        for line in process.stdout:
            banner.append(line)
            if line.strip().startswith("try:"):
                break
        text = "".join(banner)
        assert "5,000 images" in text
        url = re.search(r"images API:\s+(http://\S+)/container-registry", text).group(1)  # type: ignore[union-attr]
        folder = re.search(r"folder (b1g[0-9a-z]{17})", text).group(1)  # type: ignore[union-attr]
        assert f"MIRROR_SCOPES=folder:{folder}" in text

        async def probe() -> int:
            async with aiohttp.ClientSession() as session:
                status, _, body = await _get(
                    session, url + IMAGES, {"folderId": folder, "pageSize": "3"}
                )
                assert len(body["images"]) == 3
                return status

        assert asyncio.run(probe()) == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MIRROR_TEST_MILLION") != "1", reason="set MIRROR_TEST_MILLION=1"
)
def test_a_million_image_walk() -> None:
    """``mirror simulate --images 1000000`` serves a complete walk (time printed, not asserted)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mirror", "simulate", "--images", "1000000", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        text = ""
        for line in process.stdout:
            text += line
            if line.strip().startswith("try:"):
                break
        ready = time.perf_counter() - started
        url = re.search(r"images API:\s+(http://\S+)/container-registry", text).group(1)  # type: ignore[union-attr]
        folders = re.findall(r"folder (b1g[0-9a-z]{17}): ([0-9,]+) images", text)
        total, seconds, pages = asyncio.run(_walk_all(url, [f for f, _ in folders]))
        assert total == 1_000_000 == sum(int(n.replace(",", "")) for _, n in folders)
        print(
            f"\nready in {ready:.1f} s; walked {total:,} images in {pages} pages of 1000 "
            f"in {seconds:.1f} s ({total / seconds:,.0f} images/s)"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _walk_all(url: str, folders: list[str]) -> tuple[int, float, int]:
    import orjson

    started = time.perf_counter()
    seen: set[str] = set()
    pages = 0
    async with aiohttp.ClientSession() as session:
        for folder in folders:
            token = ""
            while True:
                params = {
                    "folderId": folder,
                    "pageSize": "1000",
                    **({"pageToken": token} if token else {}),
                }
                async with session.get(url + IMAGES, params=params) as response:
                    assert response.status == 200
                    body = orjson.loads(await response.read())
                pages += 1
                for image in body.get("images", ()):
                    assert image["id"] not in seen
                    seen.add(image["id"])
                token = body.get("nextPageToken", "")
                if not token:
                    break
    return len(seen), time.perf_counter() - started, pages
