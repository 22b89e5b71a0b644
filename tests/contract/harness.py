"""Running contract cases against any upstream-compatible API, checked strictly.

A ``ContractTarget`` is the API under test (an aiohttp ``TestClient``, or a
``ClientSession`` made with ``base_url=``: anything whose ``get``/``delete`` take
a path) and ``truth``, the upstream state it must agree with: the simulator's
``SimulatedRegistry`` itself, or the one a mirror ingested.

Every List, Get and Operation answer is parsed with the official SDK's protobuf
messages (``ignore_unknown_fields=False``), and its raw JSON is checked for the
upstream conventions: int64 as strings, empty fields omitted, RFC 3339 UTC times.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import empty_pb2, json_format
from google.rpc import error_details_pb2, status_pb2
from yandex.cloud.containerregistry.v1 import image_pb2, image_service_pb2
from yandex.cloud.operation import operation_pb2
from yarl import URL

from mirror.listing import ListRequest, image_sort_key, parse_list_request
from mirror.upstream.simulator.state import SimulatedRegistry

IMAGES = "/container-registry/v1/images"
OPERATIONS = "/operations"
REQUEST_INFO = "type.googleapis.com/google.rpc.RequestInfo"
DELETE_METADATA = "type.googleapis.com/yandex.cloud.containerregistry.v1.DeleteImageMetadata"
EMPTY = "type.googleapis.com/google.protobuf.Empty"

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z")
INT64_TEXT = re.compile(r"-?[1-9][0-9]*")  # zero is omitted, never written
IMAGE_KEYS = {"id", "name", "digest", "compressedSize", "config", "layers", "tags", "createdAt"}
BLOB_KEYS = {"id", "digest", "size", "urls"}

# Any fields are resolved through the descriptor pool: make sure Empty is in it.
assert empty_pb2.Empty.DESCRIPTOR.full_name == "google.protobuf.Empty"

Params = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass
class ContractTarget:
    """The upstream-compatible API under test and the truth it must agree with."""

    client: Any
    truth: SimulatedRegistry
    headers: Mapping[str, str] = field(default_factory=dict)
    operation_timeout: float = 15.0
    _known: Known | None = None

    @property
    def known(self) -> Known:
        """The scopes and images cases use (picked once; they stay valid through the scenarios)."""
        if self._known is None:
            self._known = Known.from_truth(self.truth)
        return self._known


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        return orjson.loads(self.text)


async def call(
    target: ContractTarget, method: str, path: str | URL, params: Params | None = None
) -> Answer:
    request = target.client.get if method == "GET" else target.client.delete
    async with request(path, params=params, headers=dict(target.headers)) as response:
        return Answer(response.status, dict(response.headers), await response.text())


@dataclass(frozen=True, slots=True)
class Known:
    """Scopes and images the cases refer to, picked from the truth."""

    folder_id: str
    other_folder_id: str
    registry_id: str
    other_registry_id: str
    repository: str
    other_repository: str
    image_id: str
    unknown_image_id: str

    @classmethod
    def from_truth(cls, truth: SimulatedRegistry) -> Known:
        from mirror.model import Scope, ScopeKind

        model = truth.model
        folders = sorted(model.folder_ids, key=lambda f: -truth.count(Scope(ScopeKind.FOLDER, f)))
        registries = sorted(
            model.registry_ids, key=lambda r: -sum(1 for _ in truth.repositories(r))
        )
        registry = registries[0]
        repos = sorted(
            truth.repositories(registry), key=lambda repo: -truth.repo_image_count(repo.index)
        )
        repository, other = repos[0].name, repos[1].name
        image = next(truth.all_images(Scope(ScopeKind.REPOSITORY, repository)))
        unknown = "crp" + "0" * 17
        assert truth.get(unknown) is None
        assert truth.count(Scope(ScopeKind.FOLDER, folders[0])) > 1000, (
            "cases need a folder of > 1000"
        )
        assert truth.repo_image_count(repos[0].index) >= 5, "cases need a repository of >= 5"
        return cls(
            folder_id=folders[0],
            other_folder_id=folders[1],
            registry_id=registry,
            other_registry_id=registries[1],
            repository=repository,
            other_repository=other,
            image_id=image.id,
            unknown_image_id=unknown,
        )


# -- strict parsing ------------------------------------------------------------------------


def parse_list(answer: Answer) -> tuple[image_service_pb2.ListImagesResponse, dict[str, Any]]:
    assert answer.status == 200, answer.text
    message = json_format.Parse(
        answer.text, image_service_pb2.ListImagesResponse(), ignore_unknown_fields=False
    )
    raw = answer.json()
    assert set(raw) <= {"images", "nextPageToken"}, raw.keys()
    assert raw.get("images", None) != [], "an empty list is omitted"
    assert raw.get("nextPageToken", None) != "", "an empty token is omitted"
    for image in raw.get("images", []):
        check_image_wire(image)
    return message, raw


def parse_image(answer: Answer) -> tuple[image_pb2.Image, dict[str, Any]]:
    assert answer.status == 200, answer.text
    message = json_format.Parse(answer.text, image_pb2.Image(), ignore_unknown_fields=False)
    raw = answer.json()
    check_image_wire(raw)
    return message, raw


def parse_operation(answer: Answer) -> tuple[operation_pb2.Operation, dict[str, Any]]:
    assert answer.status == 200, answer.text
    message = json_format.Parse(answer.text, operation_pb2.Operation(), ignore_unknown_fields=False)
    raw = answer.json()
    assert raw["id"] and raw["metadata"]["@type"] == DELETE_METADATA
    for key in ("createdAt", "modifiedAt"):
        assert RFC3339_UTC.fullmatch(raw[key]), raw[key]
    return message, raw


def parse_error(answer: Answer, status: int, code: int) -> status_pb2.Status:
    """An error answer: the HTTP status, and a google.rpc.Status with a RequestInfo."""
    assert answer.status == status, (answer.status, answer.text)
    assert answer.headers.get("Content-Type", "").startswith("application/json")
    message = json_format.Parse(answer.text, status_pb2.Status(), ignore_unknown_fields=False)
    assert message.code == code, answer.text
    assert message.message
    infos = [d for d in answer.json()["details"] if d["@type"] == REQUEST_INFO]
    assert len(infos) == 1 and infos[0]["requestId"], answer.text
    info = error_details_pb2.RequestInfo()
    assert message.details[0].Unpack(info) and info.request_id == infos[0]["requestId"]
    return message


def check_image_wire(image: dict[str, Any]) -> None:
    """Upstream JSON conventions on one image: camelCase, int64 text, no empty field, RFC 3339."""
    assert set(image) <= IMAGE_KEYS, set(image) - IMAGE_KEYS
    assert image["id"]
    for key, value in image.items():
        assert value not in ("", [], {}, None, "0"), f"empty {key} must be omitted"
    if "compressedSize" in image:
        assert isinstance(image["compressedSize"], str) and INT64_TEXT.fullmatch(
            image["compressedSize"]
        )
    blobs = [image["config"]] if "config" in image else []
    blobs += image.get("layers", [])
    for blob in blobs:
        assert set(blob) <= BLOB_KEYS and blob, blob
        for key, value in blob.items():
            assert value not in ("", [], None, "0"), f"empty blob {key} must be omitted"
        if "size" in blob:
            assert isinstance(blob["size"], str) and INT64_TEXT.fullmatch(blob["size"]), blob
    if "createdAt" in image:
        assert RFC3339_UTC.fullmatch(image["createdAt"]), image["createdAt"]


# -- the truth -------------------------------------------------------------------------------


def expected_images(truth: SimulatedRegistry, request: ListRequest) -> list[dict[str, Any]]:
    """What a List must return over all pages, in order, according to the truth."""
    images = [
        image.to_json()
        for image in map(truth.record, truth.refs(request.scope))
        if request.filter is None or request.filter.matches(image.name)
    ]
    return sorted(images, key=image_sort_key(request.order))


async def walk(
    target: ContractTarget, params: Mapping[str, str], *, max_pages: int = 100_000
) -> list[dict[str, Any]]:
    """Every image of a listing, page by page, each page parsed strictly."""
    images: list[dict[str, Any]] = []
    token = ""
    for _ in range(max_pages):
        query = dict(params)
        if token:
            query["pageToken"] = token
        message, raw = parse_list(await call(target, "GET", IMAGES, query))
        page = raw.get("images", [])
        size = parse_list_request(query).page_size
        assert len(page) <= size
        images.extend(page)
        token = message.next_page_token
        if not token:
            return images
        assert len(page) == size, "a page with a next token is full"
    raise AssertionError("the walk did not end")


async def wait_operation(target: ContractTarget, operation_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + target.operation_timeout
    while True:
        _, raw = parse_operation(await call(target, "GET", f"{OPERATIONS}/{operation_id}"))
        if raw.get("done"):
            return raw
        assert time.monotonic() < deadline, f"operation {operation_id} not done in time"
        await asyncio.sleep(0.02)
