"""The upstream answer checks (mirror/upstream/messages.py): the Image validator derived from
the SDK's descriptors agrees with protobuf's strict parser and adds the formats it cannot say."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from yandex.cloud.containerregistry.v1 import image_pb2

from mirror.errors import MalformedAnswer
from mirror.model import Scope, ScopeKind
from mirror.upstream.messages import (
    IMAGE_REQUIRED,
    api_error_code,
    check_image,
    check_list_page,
    check_operation,
)
from mirror.upstream.simulator.config import SimulatorConfig
from mirror.upstream.simulator.runtime import Simulator
from mirror.upstream.simulator.state import SimulatedRegistry

DELETE_METADATA = "type.googleapis.com/yandex.cloud.containerregistry.v1.DeleteImageMetadata"
EMPTY = "type.googleapis.com/google.protobuf.Empty"
REQUEST_INFO = "type.googleapis.com/google.rpc.RequestInfo"


@pytest.fixture(scope="module")
def registry() -> SimulatedRegistry:
    return Simulator.from_config(SimulatorConfig(images=300, seed=5)).registry


def wire_images(registry: SimulatedRegistry) -> list[dict[str, Any]]:
    """The images as the simulator's List writes them."""
    out = []
    for folder in registry.model.folder_ids:
        for ref in registry.refs(Scope(ScopeKind.FOLDER, folder)):
            out.append(orjson.loads(registry.json_bytes(ref)))
    return out


def strict_parse_ok(image: Any) -> bool:
    try:
        json_format.ParseDict(image, image_pb2.Image(), ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, AttributeError):
        return False
    return True


def ours_ok(image: Any) -> bool:
    try:
        check_image(image, "r1")
    except MalformedAnswer:
        return False
    return True


def test_every_simulator_image_passes_both_checks(registry: SimulatedRegistry) -> None:
    images = wire_images(registry)
    assert len(images) == 300
    for image in images:
        assert strict_parse_ok(image)
        check_image(image, "r1")
    found, token = check_list_page({"images": images[:10], "nextPageToken": "t"}, "r1")
    assert found == images[:10] and token == "t"
    assert check_list_page({}, "r1") == ([], "")


def _mutations(image: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field (nested too) replaced by values of other JSON types, dropped, or joined
    by an unknown field."""
    values: list[Any] = [None, True, 7, 1.5, "text", [], {}, ["x"], [7], {"k": "v"}]

    def paths(obj: Any, prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        if isinstance(obj, dict):
            for key, value in obj.items():
                yield (*prefix, key)
                yield from paths(value, (*prefix, key))
        elif isinstance(obj, list) and obj:
            yield (*prefix, 0)
            yield from paths(obj[0], (*prefix, 0))

    for path in paths(image, ()):
        for value in values:
            mutated = copy.deepcopy(image)
            target = mutated
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = value
            yield f"{path}={value!r}", mutated
        if isinstance(path[-1], str):
            dropped = copy.deepcopy(image)
            target = dropped
            for step in path[:-1]:
                target = target[step]
            del target[path[-1]]
            yield f"{path} dropped", dropped
    yield "unknown field", {**image, "platform": "linux/amd64"}
    yield "unknown blob field", {**image, "config": {**image["config"], "mediaType": "x"}}


def test_whatever_protobuf_refuses_the_derived_check_refuses_too(
    registry: SimulatedRegistry,
) -> None:
    image = next(i for i in wire_images(registry) if "tags" in i and len(i["layers"]) > 1)
    tried = refused = 0
    for what, mutated in _mutations(image):
        tried += 1
        if not strict_parse_ok(mutated):
            refused += 1
            assert not ours_ok(mutated), what
    assert tried > 100 and refused > 50


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "crp1"}, "id"),
        ({"id": "CRP00000000000000001"}, "id"),
        ({"digest": "sha256:abc"}, "digest"),
        ({"digest": "md5:" + "0" * 32}, "digest"),
        ({"name": "no-registry"}, "name"),
        ({"compressedSize": 12}, "compressedSize"),  # a number: protobuf takes it, the cloud never
        ({"compressedSize": "-1"}, "compressedSize"),
        ({"compressedSize": "9223372036854775808"}, "compressedSize"),
        ({"compressedSize": "012"}, "compressedSize"),
        ({"createdAt": "2024-13-01T00:00:00Z"}, "createdAt"),
        ({"createdAt": "yesterday"}, "createdAt"),
        ({"tags": ["-bad"]}, "tags[0]"),
        ({"layers": [{"digest": "sha256:" + "a" * 64}]}, "layers[0].size"),
        ({"config": {"size": "10"}}, "config.digest"),
    ],
)
def test_formats_protobuf_cannot_say(
    registry: SimulatedRegistry, change: dict[str, Any], field: str
) -> None:
    image = {**wire_images(registry)[0], **change}
    with pytest.raises(MalformedAnswer) as info:
        check_image(image, "r1")
    assert f"Image.{field}:" in str(info.value)


@pytest.mark.parametrize("missing", IMAGE_REQUIRED)
def test_a_truncated_image_names_what_it_lacks_and_the_request(
    registry: SimulatedRegistry, missing: str
) -> None:
    image = dict(wire_images(registry)[3])
    del image[missing]
    with pytest.raises(MalformedAnswer) as info:
        check_list_page({"images": [wire_images(registry)[0], image]}, "req-42")
    text = str(info.value)
    assert f"images[1].{missing}" in text and "missing" in text and "req-42" in text
    assert image["id"] in text if missing != "id" else True


@pytest.mark.parametrize(
    "page",
    [[], "x", {"images": {}}, {"images": "x"}, {"nextPageToken": 5}, {"extra": 1}],
)
def test_a_page_that_is_not_a_list_images_response(page: Any) -> None:
    with pytest.raises(MalformedAnswer, match="ListImagesResponse"):
        check_list_page(page, "r1")


def _operation(**extra: Any) -> dict[str, Any]:
    return {
        "id": "crp00000000000000op1",
        "description": "Delete image",
        "createdAt": "2024-01-01T00:00:00Z",
        "createdBy": "ajeuser",
        "modifiedAt": "2024-01-01T00:00:01Z",
        "done": False,
        "metadata": {"@type": DELETE_METADATA, "imageId": "crp00000000000000001"},
        **extra,
    }


def test_well_formed_operations_pass() -> None:
    op = _operation()
    assert check_operation(op, "r", operation_id=op["id"], image_id="crp00000000000000001") is op
    check_operation(_operation(done=True, response={"@type": EMPTY}), "r")
    failed = _operation(done=True, error={"code": 5, "message": "gone", "details": []})
    check_operation(failed, "r")


@pytest.mark.parametrize(
    ("op", "kwargs", "what"),
    [
        (_operation(done=True), {}, "exactly one of response, error"),
        (
            _operation(done=True, response={"@type": EMPTY}, error={"code": 5, "message": "x"}),
            {},
            "oneof",  # protobuf's own words
        ),
        (_operation(response={"@type": EMPTY}), {}, "not done"),
        (_operation(done=True, error={"code": 0, "message": "x"}), {}, "code 0"),
        (_operation(), {"operation_id": "other"}, "asked for other"),
        (_operation(), {"image_id": "crp00000000000000002"}, "metadata.imageId"),
        (_operation(done="yes"), {}, "Operation"),
        (_operation(status="DONE"), {}, "Operation"),
        ({"done": True}, {}, "Operation"),
        ([], {}, "Operation"),
    ],
)
def test_malformed_operations_are_refused(op: Any, kwargs: dict[str, Any], what: str) -> None:
    with pytest.raises(MalformedAnswer, match=what):
        check_operation(op, "r", **kwargs)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"code": 5, "message": "Image x not found", "details": []}, 5),
        (
            {"code": 5, "message": "m", "details": [{"@type": REQUEST_INFO, "requestId": "a"}]},
            5,
        ),
        ({"code": 5, "message": "m", "details": [{"@type": "type.googleapis.com/x.Y"}]}, 5),
        ({"code": 14, "message": "unavailable"}, 14),
        ({"code": "5", "message": "m"}, None),
        ({"code": True, "message": "m"}, None),
        ({"code": 99, "message": "m"}, None),
        ({"code": 5, "message": 7}, None),
        ({"code": 5, "message": "m", "details": "x"}, None),
        ({"code": 5, "message": "m", "details": [{"requestId": "a"}]}, None),
        ({"code": 5, "message": "m", "extra": 1}, None),
        ({"message": "m"}, None),
        (["code", 5], None),
        ("<html>404</html>", None),
    ],
)
def test_an_error_body_is_the_apis_only_when_well_formed(body: Any, code: int | None) -> None:
    assert api_error_code(body) == code
