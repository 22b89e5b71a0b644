"""The upstream client against small in-process aiohttp servers: paging, errors, retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mirror.errors import (
    InvalidArgument,
    MalformedAnswer,
    PermissionDenied,
    UpstreamError,
    UpstreamStatusError,
)
from mirror.model import Scope
from mirror.settings import Secret, Settings
from mirror.upstream.client import READ_AHEAD_AFTER_S, UpstreamClient
from mirror.upstream.retry import RetryPolicy
from mirror.upstream.throttle import Throttle

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.001, max_delay=0.01, max_retry_after=0.05)


def image(n: int) -> dict[str, Any]:
    """A whole Image, as the cloud sends one (the client checks every answer)."""
    return {
        "id": f"crp{n:017d}",
        "name": "reg1/app",
        "digest": f"sha256:{n:064x}",
        "compressedSize": "2000",
        "config": {"id": "cfg1", "digest": f"sha256:c{n:063x}", "size": "1000"},
        "layers": [{"id": "l1", "digest": f"sha256:a{n:063x}", "size": "1000"}],
        "createdAt": "2024-01-01T10:00:00.123456789Z",
    }


EMPTY = "type.googleapis.com/google.protobuf.Empty"


def delete_metadata(image_id: str) -> dict[str, str]:
    return {
        "@type": "type.googleapis.com/yandex.cloud.containerregistry.v1.DeleteImageMetadata",
        "imageId": image_id,
    }


def error_body(code: int, message: str) -> bytes:
    return orjson.dumps({"code": code, "message": message, "details": []})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_client(session: aiohttp.ClientSession, url: str, **settings: Any) -> UpstreamClient:
    s = Settings.load(env={}, upstream_url=url, operation_url=url, **settings)
    return UpstreamClient(
        session, s, retry=FAST_RETRY, throttle=Throttle(rate=10_000, concurrency=4)
    )


async def test_iter_pages_follows_tokens_and_sends_scope_params(serve, session) -> None:  # type: ignore[no-untyped-def]
    seen: list[dict[str, str]] = []

    async def list_images(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        token = request.query.get("pageToken", "")
        start = int(token or 0)
        images = [image(n) for n in range(start, min(start + 2, 5))]
        body: dict[str, Any] = {"images": images}
        if start + 2 < 5:
            body["nextPageToken"] = str(start + 2)
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_get("/container-registry/v1/images", list_images)
    client = make_client(session, await serve(app))
    pages = [p async for p in client.iter_pages(Scope.parse("registry:reg1"), page_size=2)]
    assert [len(p.images) for p in pages] == [2, 2, 1]
    assert [img["id"] for p in pages for img in p.images] == [image(n)["id"] for n in range(5)]
    assert pages[-1].next_page_token == ""
    assert seen[0] == {"registryId": "reg1", "pageSize": "2"}
    assert seen[1]["pageToken"] == "2"


async def test_iter_pages_yields_known_pages_unparsed_with_their_remembered_token(
    serve, session
) -> None:  # type: ignore[no-untyped-def]
    bodies = {
        "": orjson.dumps({"images": [image(0)], "nextPageToken": "p2"}),
        "p2": orjson.dumps({"images": [image(1)]}),
    }

    async def list_images(request: web.Request) -> web.Response:
        body = bodies[request.query.get("pageToken", "")]
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/container-registry/v1/images", list_images)
    client = make_client(session, await serve(app))
    asked: list[tuple[str, bytes]] = []

    def known(token: str, body: bytes) -> str | None:
        asked.append((token, body))
        return "p2" if token == "" else None  # the first page is remembered, the second is not

    pages = [p async for p in client.iter_pages(Scope.parse("folder:f1"), known=known)]
    assert asked == [("", bodies[""]), ("p2", bodies["p2"])]
    first, second = pages
    assert first.known and first.images == [] and first.next_page_token == "p2"
    assert first.body == bodies[""] and first.page_token == ""
    assert not second.known and second.images == [image(1)] and second.page_token == "p2"
    assert second.next_page_token == ""


def chain_server(
    next_of: dict[str, str], *, delay: float, refuse: frozenset[str] = frozenset()
) -> tuple[web.Application, dict[str, Any]]:
    """A List endpoint answering each page token after ``delay`` s: one image a page, the
    next token from ``next_of`` ('' ends the walk); a token in ``refuse`` gets a 400.
    The dict it returns counts the requests per token and the most in flight at once."""
    seen: dict[str, Any] = {"asked": [], "in_flight": 0, "most": 0}

    async def list_images(request: web.Request) -> web.Response:
        token = request.query.get("pageToken", "")
        seen["asked"].append(token)
        seen["in_flight"] += 1
        seen["most"] = max(seen["most"], seen["in_flight"])
        try:
            await asyncio.sleep(delay)
        finally:
            seen["in_flight"] -= 1
        if token in refuse:
            return web.Response(
                status=400,
                body=error_body(3, "invalid page token"),
                content_type="application/json",
            )
        body: dict[str, Any] = {"images": [image(len(token))]}
        if next_of[token]:
            body["nextPageToken"] = next_of[token]
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_get("/container-registry/v1/images", list_images)
    return app, seen


async def test_read_ahead_asks_for_remembered_pages_while_the_walk_waits(serve, session) -> None:  # type: ignore[no-untyped-def]
    # An unchanged registry whose answers take longer than READ_AHEAD_AFTER_S: the
    # pages after the awaited one are asked for on the remembered tokens.
    next_of = {"": "p1", "p1": "p2", "p2": "p3", "p3": "p4", "p4": "p5", "p5": ""}
    app, seen = chain_server(next_of, delay=max(0.04, 2 * READ_AHEAD_AFTER_S))
    client = make_client(session, await serve(app))
    bodies: dict[str, bytes] = {}

    def known(token: str, body: bytes) -> str | None:
        bodies[token] = body
        return next_of[token]  # every page is the one remembered

    pages = [
        p
        async for p in client.iter_pages(
            Scope.parse("folder:f1"), known=known, remembered=lambda t: next_of[t] or None
        )
    ]
    assert [p.page_token for p in pages] == ["", "p1", "p2", "p3", "p4", "p5"]
    assert [p.next_page_token for p in pages] == ["p1", "p2", "p3", "p4", "p5", ""]
    assert all(p.known and p.body == bodies[p.page_token] for p in pages)
    assert sorted(seen["asked"]) == sorted(next_of)  # each page asked for once
    assert seen["most"] > 1  # and several at once


async def test_read_ahead_drops_the_guesses_of_a_page_that_changed(serve, session) -> None:  # type: ignore[no-untyped-def]
    # The memo remembers "" -> p1 -> p2 -> p3, but p1 changed: it now leads to q2. The
    # pages asked for on the stale tokens are never yielded, and the upstream's
    # refusal of a stale token is not the walk's error.
    remembered = {"": "p1", "p1": "p2", "p2": "p3", "p3": ""}
    next_of = {"": "p1", "p1": "q2", "q2": "", "p2": "p3", "p3": ""}
    app, seen = chain_server(
        next_of, delay=max(0.04, 2 * READ_AHEAD_AFTER_S), refuse=frozenset({"p3"})
    )
    client = make_client(session, await serve(app))

    def known(token: str, body: bytes) -> str | None:
        return next_of[token] if token == "" else None  # only the first page is unchanged

    pages = [
        p
        async for p in client.iter_pages(
            Scope.parse("folder:f1"), known=known, remembered=lambda t: remembered.get(t) or None
        )
    ]
    assert [p.page_token for p in pages] == ["", "p1", "q2"]
    assert [p.images for p in pages[1:]] == [[image(2)], [image(2)]]
    assert pages[-1].next_page_token == ""
    assert "p2" in seen["asked"]  # a guess went out, and was dropped


async def test_a_read_ahead_answer_the_walk_reaches_fails_the_walk_as_before(
    serve, session
) -> None:  # type: ignore[no-untyped-def]
    next_of = {"": "p1", "p1": "p2", "p2": ""}
    app, _ = chain_server(
        next_of, delay=max(0.04, 2 * READ_AHEAD_AFTER_S), refuse=frozenset({"p2"})
    )
    client = make_client(session, await serve(app))
    walked: list[str] = []
    with pytest.raises(UpstreamStatusError, match="invalid page token"):
        async for page in client.iter_pages(
            Scope.parse("folder:f1"),
            known=lambda t, b: next_of[t],
            remembered=lambda t: next_of[t] or None,
        ):
            walked.append(page.page_token)
    assert walked == ["", "p1"]


async def test_empty_list_answer_is_one_empty_page(serve, session) -> None:  # type: ignore[no-untyped-def]
    async def list_images(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/container-registry/v1/images", list_images)
    client = make_client(session, await serve(app))
    pages = [p async for p in client.iter_pages(Scope.parse("folder:f1"))]
    assert len(pages) == 1 and pages[0].images == []


async def test_repeated_page_token_fails_instead_of_looping(serve, session) -> None:  # type: ignore[no-untyped-def]
    async def list_images(request: web.Request) -> web.Response:
        return web.json_response({"images": [image(1)], "nextPageToken": "same"})

    app = web.Application()
    app.router.add_get("/container-registry/v1/images", list_images)
    client = make_client(session, await serve(app))
    with pytest.raises(UpstreamError, match="repeated a page token"):
        async for _ in client.iter_pages(Scope.parse("folder:f1")):
            pass


async def test_get_image_returns_none_on_not_found(serve, session) -> None:  # type: ignore[no-untyped-def]
    async def get(request: web.Request) -> web.Response:
        if request.match_info["id"] == "crp00000000000000001":
            return web.json_response(image(1))
        return web.Response(
            status=404, body=error_body(5, "Image not found"), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app))
    assert (await client.get_image("crp00000000000000001")) == image(1)
    assert await client.get_image("crp00000000000000002") is None


async def test_client_errors_are_translated_and_not_retried(serve, session) -> None:  # type: ignore[no-untyped-def]
    calls = 0

    async def get(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if request.match_info["id"] == "bad":
            return web.Response(
                status=400, content_type="application/json", body=error_body(3, "bad id")
            )
        return web.Response(
            status=403, content_type="application/json", body=error_body(7, "denied")
        )

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app))
    with pytest.raises(UpstreamStatusError) as info:
        await client.get_image("bad")
    assert isinstance(info.value.error, InvalidArgument) and info.value.http_status == 400
    with pytest.raises(UpstreamStatusError) as info:
        await client.get_image("other")
    assert isinstance(info.value.error, PermissionDenied)
    assert calls == 2


async def test_retries_5xx_and_429_with_retry_after_then_succeeds(serve, session) -> None:  # type: ignore[no-untyped-def]
    answers = [
        web.Response(
            status=503, content_type="application/json", body=error_body(14, "unavailable")
        ),
        web.Response(
            status=429,
            content_type="application/json",
            body=error_body(8, "slow down"),
            headers={"Retry-After": "0"},
        ),
        web.Response(status=502, text="<html>bad gateway</html>"),
    ]

    async def get(request: web.Request) -> web.Response:
        if answers:
            return answers.pop(0)
        return web.json_response(image(7))

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app))
    assert await client.get_image(image(7)["id"]) == image(7)
    assert answers == []


async def test_gives_up_after_the_retry_budget_with_the_upstream_error(serve, session) -> None:  # type: ignore[no-untyped-def]
    calls = 0

    async def get(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(
            status=500, content_type="application/json", body=error_body(13, "boom")
        )

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app))
    with pytest.raises(UpstreamStatusError) as info:
        await client.get_image("x")
    assert info.value.http_status == 500 and info.value.error.message == "boom"
    assert calls == FAST_RETRY.max_attempts


async def test_dropped_connections_are_retried(serve, session) -> None:  # type: ignore[no-untyped-def]
    calls = 0

    async def get(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls <= 2:
            assert request.transport is not None
            request.transport.close()  # the connection drops without an answer
            return web.Response()
        return web.json_response(image(3))

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app))
    assert await client.get_image(image(3)["id"]) == image(3)
    assert calls == 3


async def test_unreachable_upstream_is_an_upstream_error(session) -> None:  # type: ignore[no-untyped-def]
    client = make_client(session, "http://127.0.0.1:9")
    with pytest.raises(UpstreamError) as info:
        await client.get_image("x")
    assert not isinstance(info.value, UpstreamStatusError)


async def test_delete_is_not_retried_on_500_but_is_on_429(serve, session) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    async def delete(request: web.Request) -> web.Response:
        calls.append(request.match_info["id"])
        if request.match_info["id"] == "a":
            return web.Response(
                status=500, content_type="application/json", body=error_body(13, "boom")
            )
        if len(calls) == 2:
            return web.Response(
                status=429, content_type="application/json", body=error_body(8, "slow")
            )
        op = {"id": "op1", "done": False, "metadata": delete_metadata(request.match_info["id"])}
        return web.json_response(op)

    async def operation(request: web.Request) -> web.Response:
        return web.json_response(
            {"id": request.match_info["id"], "done": True, "response": {"@type": EMPTY}}
        )

    app = web.Application()
    app.router.add_delete("/container-registry/v1/images/{id}", delete)
    app.router.add_get("/operations/{id}", operation)
    client = make_client(session, await serve(app))
    with pytest.raises(UpstreamStatusError):
        await client.delete_image("a")
    assert calls == ["a"]
    op = await client.delete_image("b")
    assert op["id"] == "op1" and calls == ["a", "b", "b"]
    assert (await client.get_operation("op1"))["done"] is True


async def test_token_sent_as_bearer_and_never_logged(serve, session, caplog) -> None:  # type: ignore[no-untyped-def]
    secret = "t1.very-secret-iam-token"
    auth_headers: list[str] = []
    failures = [500, 401]

    async def get(request: web.Request) -> web.Response:
        auth_headers.append(request.headers.get("Authorization", ""))
        if failures:
            return web.Response(status=failures.pop(0), body=error_body(13, "nope"))
        return web.Response(
            status=403, content_type="application/json", body=error_body(7, "denied")
        )

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app), upstream_token=Secret(secret))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamStatusError) as info:
        await client.get_image("x")
    assert set(auth_headers) == {f"Bearer {secret}"}
    assert len(auth_headers) == 3  # 500 retried, 401 retried once with a refreshed token
    assert secret not in caplog.text
    assert secret not in str(info.value) and secret not in repr(info.value)


# -- only the API's own NOT_FOUND is evidence ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (404, b"<html><h1>404 Not Found</h1></html>", "text/html"),  # an ingress's page
        (404, error_body(5, "Image not found"), "text/plain"),  # not sent as JSON
        (404, error_body(13, "internal"), "application/json"),  # 404 contradicted by its code
        (404, b'{"code": 5}', "application/json"),  # no message: not a google.rpc.Status
        (404, b'{"code": "5", "message": "x"}', "application/json"),
        (404, b"", "application/json"),
        (400, error_body(5, "Image not found"), "application/json"),  # code 5, status not 404
    ],
)
async def test_get_image_is_unknown_unless_the_api_itself_says_not_found(
    serve, session, status: int, body: bytes, content_type: str
) -> None:  # type: ignore[no-untyped-def]
    async def get(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app))
    with pytest.raises(UpstreamStatusError) as info:
        await client.get_image(image(1)["id"])
    assert not info.value.not_found
    assert info.value.request_id  # the report can name the request


async def test_get_image_500_saying_not_found_is_unknown_after_the_retries(serve, session) -> None:  # type: ignore[no-untyped-def]
    calls = 0

    async def get(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(
            status=500, body=error_body(5, "Image not found"), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app))
    with pytest.raises(UpstreamStatusError) as info:
        await client.get_image(image(1)["id"])
    assert calls == FAST_RETRY.max_attempts
    assert info.value.from_api and info.value.http_status == 500 and not info.value.not_found


@pytest.mark.parametrize(
    "answer",
    [
        {"id": image(1)["id"]},  # truncated
        image(2),  # another image
        image(1) | {"compressedSize": 2000},  # wrong type
    ],
)
async def test_get_image_answer_must_be_the_whole_image_asked_for(
    serve, session, answer: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    async def get(request: web.Request) -> web.Response:
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/container-registry/v1/images/{id}", get)
    client = make_client(session, await serve(app))
    with pytest.raises(MalformedAnswer, match="request id"):
        await client.get_image(image(1)["id"])


async def test_operation_answers_are_checked_before_use(serve, session) -> None:  # type: ignore[no-untyped-def]
    async def delete(request: web.Request) -> web.Response:
        # an Operation for another image than the one asked
        return web.json_response({"id": "op1", "done": False, "metadata": delete_metadata("zzz")})

    async def operation(request: web.Request) -> web.Response:
        op_id = request.match_info["id"]
        if op_id == "done-without-result":
            return web.json_response({"id": op_id, "done": True})
        if op_id == "wrong-id":
            return web.json_response({"id": "op9", "done": False})
        return web.Response(text="<html>ok</html>", content_type="text/html")

    app = web.Application()
    app.router.add_delete("/container-registry/v1/images/{id}", delete)
    app.router.add_get("/operations/{id}", operation)
    client = make_client(session, await serve(app))
    with pytest.raises(MalformedAnswer, match=r"metadata\.imageId"):
        await client.delete_image("crp00000000000000001")
    with pytest.raises(MalformedAnswer, match="exactly one of response, error"):
        await client.get_operation("done-without-result")
    with pytest.raises(MalformedAnswer, match="asked for wrong-id"):
        await client.get_operation("wrong-id")
    with pytest.raises(MalformedAnswer, match="not JSON"):
        await client.get_operation("html")


async def test_a_malformed_list_page_names_the_field_and_the_request(serve, session) -> None:  # type: ignore[no-untyped-def]
    async def list_images(request: web.Request) -> web.Response:
        return web.json_response(
            {"images": [image(0), {"id": image(1)["id"]}]}, headers={"X-Request-Id": "rq-7"}
        )

    app = web.Application()
    app.router.add_get("/container-registry/v1/images", list_images)
    client = make_client(session, await serve(app))
    with pytest.raises(MalformedAnswer) as info:
        await client.list_page(Scope.parse("folder:f1"))
    assert "images[1].name" in str(info.value) and "rq-7" in str(info.value)
