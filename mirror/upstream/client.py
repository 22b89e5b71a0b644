"""The REST client of the cloud ImageService (List, Get, Delete) and the Operation service.

The client takes its ``aiohttp.ClientSession`` (its owner opens and closes it)
and adds what the cloud needs: a bearer token, retries with backoff on 429,
5xx, timeouts and dropped connections (honouring ``Retry-After``), a global
rate limit and concurrency cap. Errors leave it as ``mirror.errors`` types:
``UpstreamStatusError`` (carrying the upstream's ``ApiError``) when the upstream
answered with an error, ``UpstreamError`` when it could not be reached,
``MalformedAnswer`` when it answered something that is not a well-formed message.

Every answer is checked against the cloud's message shapes before it is
returned (``mirror.upstream.messages``): a List page image by image, a Get's
Image, an Operation. ``get_image`` answers None (gone) only on positive
evidence: HTTP 404 carrying the API's own JSON error with code NOT_FOUND. A
proxy's 404 page, a 5xx whatever its body says, a timeout or retries running
out are "unknown" and raise.

Pages keep the upstream's image objects as parsed dicts, untouched, so the
ingest can store them as the exact JSON it received.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from mirror.errors import (
    HTTP_STATUS,
    ApiError,
    GrpcCode,
    MalformedAnswer,
    UpstreamError,
    UpstreamStatusError,
)
from mirror.model import Scope
from mirror.settings import Settings
from mirror.upstream.auth import Credentials, credentials_from_settings
from mirror.upstream.messages import (
    api_error_code,
    check_image,
    check_list_page,
    check_operation,
)
from mirror.upstream.retry import (
    RETRYABLE_STATUSES,
    RETRYABLE_STATUSES_UNSAFE,
    RetryPolicy,
    parse_retry_after,
)
from mirror.upstream.throttle import Throttle

log = logging.getLogger(__name__)

IMAGES_PATH = "/container-registry/v1/images"
OPERATIONS_PATH = "/operations"
MAX_PAGE_SIZE = 1000
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
# For error answers without a gRPC body (a proxy's 502 page): the usual code of each status.
# Never NOT_FOUND: a 404 page that is not the API's error says nothing about the image.
_STATUS_TO_CODE = {
    status: code
    for code, status in HTTP_STATUS.items()
    if code
    not in (
        GrpcCode.UNKNOWN,
        GrpcCode.DATA_LOSS,
        GrpcCode.FAILED_PRECONDITION,
        GrpcCode.OUT_OF_RANGE,
        GrpcCode.ABORTED,
        GrpcCode.NOT_FOUND,
    )
}
# Transport failures worth another attempt: refused/reset/dropped connections,
# truncated bodies and timeouts.
_TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Page:
    """One List answer: the image objects as the upstream sent them, and the next token ('' = last).

    A page the caller said it already holds (``iter_pages(known=...)``) is not
    parsed: ``known`` is set, ``images`` is empty and ``body`` holds the answer
    in case the caller wants it parsed after all (``parse_page``).
    """

    images: list[dict[str, Any]]
    next_page_token: str
    size_bytes: int
    page_token: str = ""
    body: bytes = b""
    known: bool = False
    request_id: str = ""


# The caller's test for a page it already holds: given the request's page token
# and the answer's body, the next page token, or None to have the page parsed.
KnownPage = Callable[[str, bytes], str | None]
# The next page token the caller remembers after a page token (None: none): only a
# guess, to ask for the pages after the one awaited early (``iter_pages``).
RememberedNext = Callable[[str], str | None]
# How many pages past the next one a walk asks for before they are due, on the
# remembered tokens: an unchanged registry is then re-walked without waiting a
# round trip per page. An answer is used only for the token the walk really
# reaches; the others are dropped unread. Only while the walk waits
# READ_AHEAD_AFTER_S or more for its pages: a walk whose pages are there when it
# wants them (a simulator on this machine, or a merge slower than the upstream)
# gains nothing, and paid up to ~10 % more CPU for the concurrent reads
# (bench/RESULTS.md, "## Ingest", 2026-12-02 08:30-08:55).
READ_AHEAD = 3
READ_AHEAD_AFTER_S = 0.01


def parse_page(body: bytes, page_token: str = "", request_id: str = "") -> Page:
    """A List answer's body as a Page, every image checked; MalformedAnswer when it is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedAnswer(
            f"List body is not JSON ({len(body)} bytes)", request_id=request_id
        ) from None
    images, token = check_list_page(data, request_id)
    return Page(images, token, len(body), page_token, body, request_id=request_id)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    retry_after: float | None
    content_type: str = ""
    request_id: str = ""


class UpstreamClient:
    """ImageService List/Get/Delete and Operation Get over REST, with auth, retries and throttling."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        credentials: Credentials | None = None,
        retry: RetryPolicy | None = None,
        throttle: Throttle | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._session = session
        self._base = settings.upstream_url.rstrip("/")
        self._operations = settings.operation_url.rstrip("/")
        self._credentials = credentials or credentials_from_settings(settings, session)
        self._retry = retry or RetryPolicy()
        self._throttle = throttle or Throttle(settings.upstream_rps, settings.upstream_concurrency)
        self._timeout = timeout

    # -- ImageService ---------------------------------------------------------

    async def list_page(
        self,
        scope: Scope,
        *,
        page_size: int = MAX_PAGE_SIZE,
        page_token: str = "",
        filter: str | None = None,
        order_by: str | None = None,
    ) -> Page:
        """One List call for ``scope``."""
        answer = await self._list_body(
            scope, page_size=page_size, page_token=page_token, filter=filter, order_by=order_by
        )
        return parse_page(answer.body, page_token, answer.request_id)

    async def _list_body(
        self,
        scope: Scope,
        *,
        page_size: int,
        page_token: str,
        filter: str | None,
        order_by: str | None,
    ) -> _Answer:
        params: dict[str, str] = dict(scope.list_params)
        params["pageSize"] = str(min(max(page_size, 1), MAX_PAGE_SIZE))
        if page_token:
            params["pageToken"] = page_token
        if filter:
            params["filter"] = filter
        if order_by:
            params["orderBy"] = order_by
        return await self._call("GET", self._base + IMAGES_PATH, params=params)

    async def iter_pages(
        self,
        scope: Scope,
        page_size: int = MAX_PAGE_SIZE,
        *,
        filter: str | None = None,
        order_by: str | None = None,
        known: KnownPage | None = None,
        remembered: RememberedNext | None = None,
    ) -> AsyncGenerator[Page, None]:
        """Every page of ``scope``, in order, until the upstream gives no next token.

        With ``known``, a page it recognises is yielded unparsed (``Page.known``)
        with the next token it gave: re-walking an unchanged registry then costs
        no JSON parsing. With ``remembered``, the next page is asked for before
        this one is yielded and, while the walk waits for its pages, up to
        ``READ_AHEAD`` pages after it on the tokens it remembers; a page is yielded
        only for the token the walk reaches, as without it.
        """

        def fetch(page_token: str) -> Awaitable[_Answer]:
            return self._list_body(
                scope, page_size=page_size, page_token=page_token, filter=filter, order_by=order_by
            )

        ahead = _ReadAhead(fetch, remembered)
        token = ""
        # Every token of the walk, as an 8-byte hash (a few MB for a million pages).
        seen_tokens: set[bytes] = {_token_key("")}
        try:
            while True:
                answer = await ahead.answer(token)
                body = answer.body
                next_token = known(token, body) if known is not None else None
                if next_token is None:
                    page = parse_page(body, token, answer.request_id)
                else:
                    page = Page(
                        [], next_token, len(body), token, body, known=True,
                        request_id=answer.request_id,
                    )  # fmt: skip
                key = _token_key(page.next_page_token)
                if page.next_page_token and key in seen_tokens:
                    # A token loop would make the walk endless; the walk fails instead,
                    # before the page that closes the loop is merged.
                    raise MalformedAnswer(
                        f"List repeated a page token already seen in this walk of {scope}",
                        request_id=answer.request_id,
                    )
                seen_tokens.add(key)
                token = page.next_page_token
                if token:
                    ahead.follow(token)
                yield page
                if not token:
                    return
        finally:
            ahead.drop()

    async def get_image(self, image_id: str) -> dict[str, Any] | None:
        """The image as the upstream describes it, or None when the upstream itself said
        NOT_FOUND (HTTP 404, the API's JSON error, code 5). Anything else that is not a
        well-formed Image of that id raises: the image's fate is unknown."""
        try:
            answer = await self._call(
                "GET", f"{self._base}{IMAGES_PATH}/{quote(image_id, safe='')}"
            )
        except UpstreamStatusError as exc:
            if exc.not_found:
                return None
            raise
        image = _json_object(answer, "Get")
        check_image(image, answer.request_id)
        if image["id"] != image_id:
            raise MalformedAnswer(
                f"Image.id: asked for {image_id}, got {image['id']}", request_id=answer.request_id
            )
        return image

    async def delete_image(self, image_id: str) -> dict[str, Any]:
        """Ask the upstream to delete an image; returns its Operation (checked)."""
        answer = await self._call(
            "DELETE", f"{self._base}{IMAGES_PATH}/{quote(image_id, safe='')}", idempotent=False
        )
        return check_operation(_json_object(answer, "Delete"), answer.request_id, image_id=image_id)

    async def get_operation(self, operation_id: str) -> dict[str, Any]:
        """An Operation's current state, from the Operation service (checked)."""
        answer = await self._call(
            "GET", f"{self._operations}{OPERATIONS_PATH}/{quote(operation_id, safe='')}"
        )
        return check_operation(
            _json_object(answer, "Operation Get"), answer.request_id, operation_id=operation_id
        )

    # -- one request, with retries --------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> _Answer:
        retryable = RETRYABLE_STATUSES if idempotent else RETRYABLE_STATUSES_UNSAFE
        started = time.monotonic()
        attempt = 0
        refreshed_auth = False
        while True:
            attempt += 1
            failure: str
            retry_after: float | None = None
            answer: _Answer | None = None
            try:
                answer = await self._send(method, url, params)
            except _TRANSIENT as exc:
                # A request that never got an answer may or may not have been acted
                # upon; only a refused connection proves it was not.
                if not idempotent and not isinstance(exc, aiohttp.ClientConnectorError):
                    raise UpstreamError(f"upstream {method} failed: {_describe(exc)}") from None
                failure = _describe(exc)
            else:
                if answer.status < 400:
                    return answer
                if answer.status == 401 and not refreshed_auth:
                    # The token may have been rotated or expired early: fetch a fresh one once.
                    refreshed_auth = True
                    await self._credentials.token(refresh=True)
                    continue
                if answer.status not in retryable:
                    raise _status_error(answer)
                failure = f"HTTP {answer.status}"
                retry_after = answer.retry_after
                if answer.status == 429 and retry_after is not None:
                    self._throttle.pause(retry_after)
            delay = self._retry.delay(attempt, retry_after)
            elapsed = time.monotonic() - started
            if not self._retry.should_retry(attempt, elapsed, delay):
                log.warning(
                    "upstream %s %s failed after %d attempt(s) in %.1fs: %s",
                    method,
                    _path(url),
                    attempt,
                    elapsed,
                    failure,
                )
                if answer is not None:
                    raise _status_error(answer)
                raise UpstreamError(
                    f"upstream {method} {_path(url)} failed after {attempt} attempt(s): {failure}"
                )
            log.info(
                "upstream %s %s: %s; attempt %d, retrying in %.2fs",
                method,
                _path(url),
                failure,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
    ) -> _Answer:
        request_id = str(uuid.uuid4())
        headers = {"Accept": "application/json", "X-Request-Id": request_id}
        token = await self._credentials.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with (
            self._throttle.slot(),
            self._session.request(
                method, url, params=params, headers=headers, timeout=self._timeout
            ) as resp,
        ):
            body = await resp.read()
            return _Answer(
                resp.status,
                body,
                parse_retry_after(resp.headers.get("Retry-After")),
                resp.content_type,
                resp.headers.get("X-Request-Id") or request_id,
            )


def _status_error(answer: _Answer) -> UpstreamStatusError:
    """The upstream's error answer. Its code is believed (and wins over the HTTP status)
    only when the body is the API's error JSON; otherwise it is guessed from the status
    and the error is marked as not from the API."""
    code: int | None = None
    data: Any = None
    if answer.content_type == "application/json":
        try:
            data = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            data = None
        code = api_error_code(data)
    if code is not None:
        error = ApiError.from_code(code, str(data.get("message", "")))
        return UpstreamStatusError(
            error, answer.status, from_api=True, request_id=answer.request_id
        )
    guessed = _STATUS_TO_CODE.get(answer.status, GrpcCode.UNKNOWN)
    error = ApiError.from_code(int(guessed), f"HTTP {answer.status} (not the API's error body)")
    return UpstreamStatusError(error, answer.status, request_id=answer.request_id)


def _json_object(answer: _Answer, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        raise MalformedAnswer(f"{what} body is not JSON", request_id=answer.request_id) from None
    if not isinstance(data, dict):
        raise MalformedAnswer(f"{what} body is not a JSON object", request_id=answer.request_id)
    return data


class _ReadAhead:
    """The pages a walk has asked for before they are due, in the order it expects them.

    Without ``remembered`` it holds nothing and every page is asked for when due.
    """

    def __init__(
        self, fetch: Callable[[str], Awaitable[_Answer]], remembered: RememberedNext | None
    ) -> None:
        self._fetch = fetch
        self._remembered = remembered
        self._tasks: list[tuple[str, asyncio.Task[_Answer]]] = []
        self._waited_s = 0.0  # how long the walk waited for its latest page

    async def answer(self, token: str) -> _Answer:
        """The answer for ``token``: the one asked for early if it was, else asked now."""
        started = time.monotonic()
        try:
            if self._tasks and self._tasks[0][0] == token:
                _, task = self._tasks.pop(0)
                return await task
            self.drop()
            return await self._fetch(token)
        finally:
            self._waited_s = time.monotonic() - started

    def follow(self, token: str) -> None:
        """The walk goes on at ``token`` (known for sure): ask for it and the pages
        remembered after it, keeping what was asked for already on that chain."""
        if self._remembered is None:
            return
        kept: list[tuple[str, asyncio.Task[_Answer]]] = []
        expected: str | None = token
        for asked, task in self._tasks:
            if asked == expected:
                kept.append((asked, task))
                expected = self._remembered(asked)
            else:
                _discard(task)
        depth = READ_AHEAD if self._waited_s >= READ_AHEAD_AFTER_S else 0
        while expected and len(kept) <= depth:
            kept.append((expected, asyncio.ensure_future(self._fetch(expected))))
            expected = self._remembered(expected)
        self._tasks = kept

    def drop(self) -> None:
        """Forget every page asked for early (the walk left the remembered chain, or ended)."""
        if self._tasks:
            log.debug("list read-ahead: %d page(s) asked for early dropped", len(self._tasks))
        for _, task in self._tasks:
            _discard(task)
        self._tasks = []


def _discard(task: asyncio.Task[_Answer]) -> None:
    """Cancel a request nobody will read; its failure, if it had one, is not news."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _token_key(token: str) -> bytes:
    return hashlib.blake2b(token.encode(), digest_size=8).digest()


def _describe(exc: BaseException) -> str:
    # The class name says enough and cannot leak a header or a token.
    return type(exc).__name__


def _path(url: str) -> str:
    return URL(url).path
