"""The upstream contract as data: single-request cases and multi-request scenarios.

Both run against any ``ContractTarget`` (see ``harness``): the simulator now, the
mirror's local API later, which must pass the very same cases.

A ``Case`` is one request. A 200 List is compared with the truth (the first page
must be exactly the truth's first images in order, with a next token exactly
when more follow); an error must carry the gRPC code, HTTP status and a message
naming the parameter. Scenarios walk, order, filter and delete across requests.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from yarl import URL

from mirror.listing import parse_list_request
from mirror.model import Scope, ScopeKind

from .harness import (
    EMPTY,
    IMAGES,
    OPERATIONS,
    ContractTarget,
    Known,
    Params,
    call,
    expected_images,
    parse_error,
    parse_image,
    parse_list,
    parse_operation,
    wait_operation,
    walk,
)

INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED = 3, 5, 12


@dataclass(frozen=True)
class Case:
    name: str
    params: Callable[[Known], Params]
    status: int = 200
    code: int | None = None
    message: str | None = None  # a part of the error message
    path: Callable[[Known], str | URL] = lambda known: IMAGES
    method: str = "GET"
    check: Callable[[Known, list[dict]], None] | None = None  # extra checks on a List page
    rest_only: bool = False  # a request no gRPC message can carry (see grpc_client)

    def __str__(self) -> str:
        return self.name


def invalid(
    name: str, params: Callable[[Known], Params], message: str, *, rest_only: bool = False
) -> Case:
    return Case(name, params, 400, INVALID_ARGUMENT, message, rest_only=rest_only)


def _names(expected: str) -> Callable[[Known, list[dict]], None]:
    def check(known: Known, images: list[dict]) -> None:
        wanted = getattr(known, expected)
        assert images and all(image["name"] == wanted for image in images)

    return check


def _registry(expected: str) -> Callable[[Known, list[dict]], None]:
    def check(known: Known, images: list[dict]) -> None:
        wanted = getattr(known, expected)
        assert images and all(image["name"].startswith(wanted + "/") for image in images)

    return check


def _count(n: int) -> Callable[[Known, list[dict]], None]:
    def check(known: Known, images: list[dict]) -> None:
        assert len(images) == n

    return check


def _raw(path: str) -> URL:
    """A path sent exactly as written: no dot segment resolved, no escape decoded by the client."""
    return URL(path, encoded=True)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


CASES: list[Case] = [
    # -- scope and precedence
    Case("folder", lambda k: {"folderId": k.folder_id}, check=_count(100)),
    Case("registry", lambda k: {"registryId": k.registry_id}, check=_registry("registry_id")),
    Case("repository", lambda k: {"repositoryName": k.repository}, check=_names("repository")),
    Case(
        "repositoryName beats registryId and folderId",
        lambda k: {"repositoryName": k.repository, "registryId": k.other_registry_id, "folderId": k.other_folder_id},
        check=_names("repository"),
    ),
    Case(
        "registryId beats folderId",
        lambda k: {"registryId": k.registry_id, "folderId": k.other_folder_id},
        check=_registry("registry_id"),
    ),
    Case("empty repositoryName is absent", lambda k: {"repositoryName": "", "registryId": k.registry_id}),
    Case("unknown registry lists nothing", lambda k: {"registryId": "crp" + "0" * 17}, check=_count(0)),
    Case("unknown folder lists nothing", lambda k: {"folderId": "b1g" + "0" * 17}, check=_count(0)),
    Case("unknown repository lists nothing", lambda k: {"repositoryName": k.registry_id + "/no/such"}, check=_count(0)),
    Case("unknown parameters are ignored", lambda k: {"folderId": k.folder_id, "view": "FULL"}, rest_only=True),
    invalid("no scope", lambda k: {}, "one of repositoryName, registryId or folderId is required"),
    invalid("all scopes empty", lambda k: {"repositoryName": "", "registryId": "", "folderId": ""}, "required"),
    invalid("registryId of 51", lambda k: {"registryId": "r" * 51}, "invalid registryId"),
    invalid("folderId of 51", lambda k: {"folderId": "f" * 51}, "invalid folderId"),
    invalid("ignored registryId is validated", lambda k: {"repositoryName": k.repository, "registryId": "r" * 51}, "invalid registryId"),
    invalid("ignored folderId is validated", lambda k: {"registryId": k.registry_id, "folderId": "f" * 51}, "invalid folderId"),
    invalid("repositoryName upper case", lambda k: {"repositoryName": k.registry_id + "/Api"}, "invalid repositoryName"),
    invalid("repositoryName //", lambda k: {"repositoryName": k.registry_id + "//api"}, "invalid repositoryName"),
    invalid("repositoryName trailing /", lambda k: {"repositoryName": k.repository + "/"}, "invalid repositoryName"),
    invalid("repositoryName double separator", lambda k: {"repositoryName": "a__b"}, "invalid repositoryName"),
    invalid("folderId with a NUL", lambda k: {"folderId": k.folder_id[:10] + "\x00"}, "invalid folderId"),
    invalid("registryId with a space", lambda k: {"registryId": "crp 1"}, "invalid registryId"),
    invalid("registryId of dots", lambda k: {"registryId": ".."}, "invalid registryId"),
    invalid("ignored folderId with a line break", lambda k: {"registryId": k.registry_id, "folderId": "b1g\nx"}, "invalid folderId"),
    invalid("parameter twice", lambda k: [("folderId", k.folder_id), ("folderId", k.other_folder_id)], "invalid folderId: given more than once", rest_only=True),
    # -- pageSize
    Case("default page size is 100", lambda k: {"folderId": k.folder_id}, check=_count(100)),
    Case("pageSize 0 means the default", lambda k: {"folderId": k.folder_id, "pageSize": "0"}, check=_count(100)),
    Case("pageSize 1", lambda k: {"folderId": k.folder_id, "pageSize": "1"}, check=_count(1)),
    Case("pageSize 1000", lambda k: {"folderId": k.folder_id, "pageSize": "1000"}, check=_count(1000)),
    Case("pageSize larger than the scope", lambda k: {"repositoryName": k.repository, "pageSize": "1000"}),
    invalid("pageSize 1001", lambda k: {"folderId": k.folder_id, "pageSize": "1001"}, "invalid pageSize"),
    invalid("pageSize -1", lambda k: {"folderId": k.folder_id, "pageSize": "-1"}, "invalid pageSize"),
    invalid("pageSize text", lambda k: {"folderId": k.folder_id, "pageSize": "ten"}, "invalid pageSize", rest_only=True),
    invalid("pageSize fraction", lambda k: {"folderId": k.folder_id, "pageSize": "2.5"}, "invalid pageSize", rest_only=True),
    invalid("pageSize beyond int64", lambda k: {"folderId": k.folder_id, "pageSize": "9" * 20}, "invalid pageSize", rest_only=True),
    invalid("pageSize of 5,000 digits", lambda k: {"folderId": k.folder_id, "pageSize": "9" * 5000}, "invalid pageSize", rest_only=True),
    Case("pageSize with 5,000 leading zeros", lambda k: {"folderId": k.folder_id, "pageSize": "0" * 5000 + "3"}, check=_count(3), rest_only=True),
    # -- pageToken
    invalid("pageToken of 101", lambda k: {"folderId": k.folder_id, "pageToken": "a" * 101}, "invalid pageToken"),
    invalid("pageToken garbage", lambda k: {"folderId": k.folder_id, "pageToken": "%%%not-a-token"}, "invalid pageToken"),
    invalid("pageToken well-formed base64 of junk", lambda k: {"folderId": k.folder_id, "pageToken": _b64("junk")}, "invalid pageToken"),
    invalid("pageToken of 100 chars of junk", lambda k: {"folderId": k.folder_id, "pageToken": "A" * 100}, "invalid pageToken"),
    # -- filter
    Case("filter =", lambda k: {"folderId": k.folder_id, "filter": f'name="{k.repository}"'}, check=_names("repository")),
    Case("filter = with spaces", lambda k: {"folderId": k.folder_id, "filter": f'  name = "{k.repository}" '}, check=_names("repository")),
    Case("filter !=", lambda k: {"registryId": k.registry_id, "filter": f'name!="{k.repository}"', "pageSize": "1000"}),
    Case("filter IN", lambda k: {"folderId": k.folder_id, "filter": f'name IN ("{k.repository}", "{k.other_repository}")', "pageSize": "1000"}),
    Case("filter NOT IN", lambda k: {"registryId": k.registry_id, "filter": f'name NOT IN ("{k.repository}", "{k.other_repository}")'}),
    Case("filter keywords any case", lambda k: {"folderId": k.folder_id, "filter": f'name not in ("{k.repository}")'}),
    Case("filter matching nothing", lambda k: {"folderId": k.folder_id, "filter": 'name="nothing/here"'}, check=_count(0)),
    Case("filter of another scope", lambda k: {"registryId": k.other_registry_id, "filter": f'name="{k.repository}"'}, check=_count(0)),
    invalid("filter of 1001", lambda k: {"folderId": k.folder_id, "filter": f'name="{k.repository}"'.ljust(1001)}, "invalid filter"),
    invalid("filter unknown field", lambda k: {"folderId": k.folder_id, "filter": 'digest="sha256:00"'}, "invalid filter"),
    invalid("filter ==", lambda k: {"folderId": k.folder_id, "filter": 'name=="a"'}, "invalid filter"),
    invalid("filter unquoted", lambda k: {"folderId": k.folder_id, "filter": "name=a"}, "invalid filter"),
    invalid("filter unterminated", lambda k: {"folderId": k.folder_id, "filter": 'name="a'}, "invalid filter"),
    invalid("filter empty list", lambda k: {"folderId": k.folder_id, "filter": "name IN ()"}, "invalid filter"),
    invalid("filter two conditions", lambda k: {"folderId": k.folder_id, "filter": 'name="a" AND name="b"'}, "invalid filter"),
    invalid("filter NOT without IN", lambda k: {"folderId": k.folder_id, "filter": 'name NOT ("a")'}, "invalid filter"),
    invalid("filter value pattern", lambda k: {"folderId": k.folder_id, "filter": 'name="Not/Valid"'}, "invalid filter"),
    invalid("filter value of 257", lambda k: {"folderId": k.folder_id, "filter": f'name="{"a" * 257}"'}, "invalid filter"),
    invalid("filter empty value", lambda k: {"folderId": k.folder_id, "filter": 'name=""'}, "invalid filter"),
    # -- orderBy
    Case("orderBy name", lambda k: {"folderId": k.folder_id, "orderBy": "name"}),
    Case("orderBy name desc", lambda k: {"folderId": k.folder_id, "orderBy": "name desc"}),
    Case("orderBy created_at desc", lambda k: {"folderId": k.folder_id, "orderBy": "created_at desc"}),
    Case("orderBy created_at", lambda k: {"registryId": k.registry_id, "orderBy": "created_at asc"}),
    Case("orderBy digest", lambda k: {"folderId": k.folder_id, "orderBy": "digest", "pageSize": "1000"}),
    Case("orderBy two keys", lambda k: {"registryId": k.registry_id, "orderBy": "name desc, created_at", "pageSize": "1000"}),
    Case("orderBy with filter", lambda k: {"folderId": k.folder_id, "orderBy": "digest desc", "filter": f'name IN ("{k.repository}", "{k.other_repository}")'}),
    invalid("orderBy of 101", lambda k: {"folderId": k.folder_id, "orderBy": "name".ljust(101)}, "invalid orderBy"),
    invalid("orderBy unknown field", lambda k: {"folderId": k.folder_id, "orderBy": "size"}, "invalid orderBy"),
    invalid("orderBy id", lambda k: {"folderId": k.folder_id, "orderBy": "id"}, "invalid orderBy"),
    invalid("orderBy bad direction", lambda k: {"folderId": k.folder_id, "orderBy": "name up"}, "invalid orderBy"),
    invalid("orderBy duplicate", lambda k: {"folderId": k.folder_id, "orderBy": "name, name desc"}, "invalid orderBy"),
    invalid("orderBy stray comma", lambda k: {"folderId": k.folder_id, "orderBy": "name,"}, "invalid orderBy"),
    # -- Get, Operation, routing
    Case("get", lambda k: {}, path=lambda k: f"{IMAGES}/{k.image_id}"),
    Case("get unknown", lambda k: {}, 404, NOT_FOUND, "not found", path=lambda k: f"{IMAGES}/{k.unknown_image_id}"),
    Case("get odd id", lambda k: {}, 404, NOT_FOUND, path=lambda k: f"{IMAGES}/not-an-id"),
    Case("get id of 51", lambda k: {}, 400, INVALID_ARGUMENT, "invalid imageId", path=lambda k: f"{IMAGES}/{'c' * 51}"),
    Case("get id with a NUL", lambda k: {}, 400, INVALID_ARGUMENT, "invalid imageId", path=lambda k: _raw(f"{IMAGES}/crp%00")),
    Case("get id with a line break", lambda k: {}, 400, INVALID_ARGUMENT, "invalid imageId", path=lambda k: _raw(f"{IMAGES}/crp%0aforged")),
    Case("delete ..", lambda k: {}, 400, INVALID_ARGUMENT, "invalid imageId", path=lambda k: _raw(f"{IMAGES}/%2e%2e"), method="DELETE"),
    Case("delete .", lambda k: {}, 400, INVALID_ARGUMENT, "invalid imageId", path=lambda k: _raw(f"{IMAGES}/%2e"), method="DELETE"),
    Case("delete id with a slash", lambda k: {}, 400, INVALID_ARGUMENT, "invalid imageId", path=lambda k: _raw(f"{IMAGES}/{k.image_id}%2f..%2f"), method="DELETE"),
    Case("delete unknown", lambda k: {}, 404, NOT_FOUND, path=lambda k: f"{IMAGES}/{k.unknown_image_id}", method="DELETE"),
    Case("operation unknown", lambda k: {}, 404, NOT_FOUND, path=lambda k: f"{OPERATIONS}/crp{'0' * 17}"),
    Case("operation id with a NUL", lambda k: {}, 400, INVALID_ARGUMENT, "invalid operationId", path=lambda k: _raw(f"{OPERATIONS}/crp%00")),
    Case("operation id of 51", lambda k: {}, 400, INVALID_ARGUMENT, "invalid operationId", path=lambda k: f"{OPERATIONS}/{'o' * 51}"),
    Case("unknown path", lambda k: {}, 404, NOT_FOUND, path=lambda k: "/container-registry/v1/nothing", rest_only=True),
    Case("wrong method", lambda k: {}, 501, UNIMPLEMENTED, path=lambda k: IMAGES, method="DELETE", rest_only=True),
]  # fmt: skip


# What the gRPC API is checked against: every case a ListImagesRequest (or a Get,
# Delete, GetOperation request) can express.
GRPC_CASES: list[Case] = [case for case in CASES if not case.rest_only]


async def run_case(target: ContractTarget, case: Case) -> None:
    known = target.known
    params = case.params(known)
    path = case.path(known)
    answer = await call(target, case.method, path, params)
    if case.status != 200:
        assert case.code is not None
        error = parse_error(answer, case.status, case.code)
        if case.message:
            assert case.message in error.message, error.message
        return
    if path == IMAGES:
        message, raw = parse_list(answer)
        request = parse_list_request(params)
        expected = expected_images(target.truth, request)
        page = raw.get("images", [])
        assert page == expected[: request.page_size]
        assert bool(message.next_page_token) == (len(expected) > request.page_size)
        if case.check:
            case.check(known, page)
    else:
        _, raw = parse_image(answer)
        truth = target.truth.get(raw["id"])
        assert truth is not None and raw == truth.to_json()


# -- scenarios -------------------------------------------------------------------------------


async def walk_every_scope_exactly_once(target: ContractTarget) -> None:
    """Paging a whole scope returns each image exactly once, in id order, at any page size."""
    known = target.known
    for params, scope in (
        ({"folderId": known.folder_id}, Scope(ScopeKind.FOLDER, known.folder_id)),
        ({"registryId": known.registry_id}, Scope(ScopeKind.REGISTRY, known.registry_id)),
        ({"repositoryName": known.repository}, Scope(ScopeKind.REPOSITORY, known.repository)),
    ):
        truth = list(target.truth.ids(scope))
        for size in ("1000", "333", "0"):
            images = await walk(target, {**params, "pageSize": size})
            ids = [image["id"] for image in images]
            assert len(ids) == len(set(ids)), "no image twice"
            assert ids == truth


async def walk_in_order_with_tie_breaks(target: ContractTarget) -> None:
    """Ordered walks follow orderBy, then id ascending, across page boundaries."""
    known = target.known
    for order_by in ("name desc", "created_at desc, name", "digest", "name, created_at desc"):
        params = {"registryId": known.registry_id, "orderBy": order_by, "pageSize": "97"}
        images = await walk(target, params)
        assert images == expected_images(target.truth, parse_list_request(params))


async def walk_filtered(target: ContractTarget) -> None:
    known = target.known
    for text in (
        f'name NOT IN ("{known.repository}")',
        f'name IN ("{known.repository}", "{known.other_repository}")',
        f'name!="{known.other_repository}"',
    ):
        params = {"folderId": known.folder_id, "filter": text, "pageSize": "500"}
        images = await walk(target, params)
        assert images == expected_images(target.truth, parse_list_request(params))


async def page_token_is_bound_to_its_listing(target: ContractTarget) -> None:
    """A token from one listing is refused by another (other scope, filter or order)."""
    known = target.known
    message, _ = parse_list(
        await call(target, "GET", IMAGES, {"folderId": known.folder_id, "pageSize": "5"})
    )
    token = message.next_page_token
    assert token and len(token) <= 100
    for other in (
        {"registryId": known.registry_id},
        {"folderId": known.folder_id, "orderBy": "name"},
        {"folderId": known.folder_id, "filter": f'name!="{known.repository}"'},
    ):
        answer = await call(target, "GET", IMAGES, {**other, "pageToken": token})
        error = parse_error(answer, 400, INVALID_ARGUMENT)
        assert "pageToken" in error.message
    # the page size may change between pages
    answer = await call(
        target, "GET", IMAGES, {"folderId": known.folder_id, "pageSize": "7", "pageToken": token}
    )
    _, raw = parse_list(answer)
    expected = expected_images(target.truth, parse_list_request({"folderId": known.folder_id}))
    assert raw["images"] == expected[5:12]


async def get_equals_list(target: ContractTarget) -> None:
    """Get answers each image exactly as List shows it."""
    known = target.known
    _, raw = parse_list(await call(target, "GET", IMAGES, {"repositoryName": known.repository}))
    for listed in raw["images"][:10]:
        _, got = parse_image(await call(target, "GET", f"{IMAGES}/{listed['id']}"))
        assert got == listed


async def delete_then_operation_then_gone(target: ContractTarget) -> None:
    """Delete answers an Operation; once done (response Empty) Get is NOT_FOUND and List lacks it."""
    known = target.known
    scope = Scope(ScopeKind.REPOSITORY, known.other_repository)
    victim = list(target.truth.ids(scope))[-1]
    message, raw = parse_operation(await call(target, "DELETE", f"{IMAGES}/{victim}"))
    assert raw["metadata"]["imageId"] == victim and message.description
    assert "error" not in raw
    done = await wait_operation(target, raw["id"])
    assert done["done"] is True and done["response"] == {"@type": EMPTY} and "error" not in done
    assert done["id"] == raw["id"] and done["metadata"] == raw["metadata"]
    parse_error(await call(target, "GET", f"{IMAGES}/{victim}"), 404, NOT_FOUND)
    listed = await walk(target, {"repositoryName": known.other_repository, "pageSize": "1000"})
    assert victim not in {image["id"] for image in listed}
    parse_error(await call(target, "DELETE", f"{IMAGES}/{victim}"), 404, NOT_FOUND)


Scenario = Callable[[ContractTarget], Awaitable[None]]

SCENARIOS: list[Scenario] = [
    walk_every_scope_exactly_once,
    walk_in_order_with_tie_breaks,
    walk_filtered,
    page_token_is_bound_to_its_listing,
    get_equals_list,
    delete_then_operation_then_gone,
]
