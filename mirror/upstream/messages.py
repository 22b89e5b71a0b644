"""What a well-formed upstream answer is: List pages, Images, Operations and errors.

An upstream answer is evidence only when it is well-formed (ARCHITECTURE.md,
invariants 1 and 8). The shapes come from the cloud's own message definitions,
the protobuf descriptors the official SDK ships (``yandex.cloud.containerregistry.v1``
and ``yandex.cloud.operation``): the JSON names, the scalar types, which fields
repeat and which are messages are read from the descriptors once, at import.
On top of what protobuf can say, the formats it cannot: the image id shape,
``sha256:`` digests, int64 written as decimal text, RFC 3339 times, and the
fields every Image the cloud sends has (proto3 has no "required").

Images are checked by a validator built from the descriptors rather than by
``json_format.ParseDict``: ParseDict costs about 100 µs an image (seven times
the JSON parse), this about 5. ``tests/unit/test_upstream_messages.py`` holds
the two to agreement. Operations and error bodies are few and go through
``ParseDict`` itself (strict: unknown fields are refused).

Every failure is a ``MalformedAnswer`` naming the request id and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pool, empty_pb2, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2, status_pb2
from yandex.cloud.containerregistry.v1 import image_pb2, image_service_pb2
from yandex.cloud.operation import operation_pb2

from mirror.errors import GrpcCode, MalformedAnswer
from mirror.listing import created_at_ns
from mirror.model import REPOSITORY_NAME_RE

# Types an Operation's and an error's Any fields may name: imported so that the
# descriptor pool resolves them.
_ANY_TYPES = (
    empty_pb2.Empty,
    image_service_pb2.DeleteImageMetadata,
    error_details_pb2.RequestInfo,
)

# The cloud's resource ids: 20 characters, a 3-letter prefix then [0-9a-z].
IMAGE_ID_RE = re.compile(r"[a-z][a-z0-9]{19}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")  # an int64 as proto3 JSON writes it, not negative
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # the OCI distribution spec's tag
INT64_MAX = 2**63 - 1

# Fields every Image and Blob the cloud sends carries (an empty one is omitted
# on the wire, and none of these is ever empty: an image has a config and layers).
IMAGE_REQUIRED = ("id", "name", "digest", "compressedSize", "config", "layers", "createdAt")
BLOB_REQUIRED = ("digest", "size")
TIMESTAMP = "google.protobuf.Timestamp"


def _bad(request_id: str, where: str, what: str) -> MalformedAnswer:
    return MalformedAnswer(f"{where}: {what}", request_id=request_id)


# -- formats protobuf cannot express ------------------------------------------------------

Check = Callable[[Any], str | None]  # None when fine, else what is wrong


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {_kind(value)}"


def _int64(value: Any) -> str | None:
    # The cloud writes int64 as decimal text (proto3 JSON); its int64s are sizes, never negative.
    if type(value) is str and len(value) < 19 and SIZE_RE.fullmatch(value) is not None:
        return None  # the common case, decided without the checks below
    if (
        not isinstance(value, str)
        or not SIZE_RE.fullmatch(value)
        or (len(value) == 19 and int(value) > INT64_MAX)
    ):
        return f"expected an int64 size (0..2^63-1) as decimal text, got {_show(value)}"
    return None


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected an RFC 3339 time, got {_kind(value)}"
    try:
        created_at_ns(value)
    except ValueError:
        return f"expected an RFC 3339 time, got {_show(value)}"
    return None


def _pattern(regex: re.Pattern[str], what: str) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not regex.fullmatch(value):
            return f"expected {what}, got {_show(value)}"
        return None

    return check


def _string_matching(regex: re.Pattern[str], what: str) -> Check:
    """A string of a format (``_string`` then ``_pattern``), in one call for the common case."""
    fullmatch = regex.fullmatch
    pattern = _pattern(regex, what)

    def check(value: Any) -> str | None:
        if type(value) is str and fullmatch(value) is not None:
            return None
        return _string(value) or pattern(value)

    return check


def _repository_name(value: Any) -> str | None:
    if not isinstance(value, str) or "/" not in value or not REPOSITORY_NAME_RE.fullmatch(value):
        return f"expected <registryId>/<repository>, got {_show(value)}"
    return None


# Per message and JSON name, the format beyond the type (checked after the type).
_FORMATS: dict[tuple[str, str], Check] = {
    ("yandex.cloud.containerregistry.v1.Image", "name"): _repository_name,
}
# Formats that are a pattern: the string check and the pattern in one function.
_PATTERNS: dict[tuple[str, str], tuple[re.Pattern[str], str]] = {
    ("yandex.cloud.containerregistry.v1.Image", "id"): (IMAGE_ID_RE, "an image id"),
    ("yandex.cloud.containerregistry.v1.Image", "digest"): (DIGEST_RE, "a sha256 digest"),
    ("yandex.cloud.containerregistry.v1.Image", "tags"): (TAG_RE, "a tag"),
    ("yandex.cloud.containerregistry.v1.Blob", "digest"): (DIGEST_RE, "a sha256 digest"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "yandex.cloud.containerregistry.v1.Image": IMAGE_REQUIRED,
    "yandex.cloud.containerregistry.v1.Blob": BLOB_REQUIRED,
}


# -- a validator derived from the descriptors ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    json_name: str
    repeated: bool
    scalar: Check | None  # a scalar's check (type, then format); None for a message
    message: _Message | None


@dataclass(frozen=True, slots=True)
class _Message:
    name: str
    fields: dict[str, _Field]
    required: tuple[str, ...]

    def check(self, value: Any) -> tuple[str, str] | None:
        """(field path, what is wrong) for the first problem, or None."""
        if not isinstance(value, dict):
            return "", f"expected an object, got {_kind(value)}"
        for key in self.required:
            if key not in value:
                return "." + key, "missing"
        fields = self.fields
        for key, item in value.items():
            spec = fields.get(key)
            if spec is None:
                return "." + key, f"not a field of {self.name.rsplit('.', 1)[-1]}"
            scalar, message = spec.scalar, spec.message
            if spec.repeated:
                if type(item) is not list:
                    return "." + key, f"expected a list, got {_kind(item)}"
                if message is not None:
                    for i, element in enumerate(item):
                        problem = message.check(element)
                        if problem is not None:
                            return f".{key}[{i}]{problem[0]}", problem[1]
                else:
                    assert scalar is not None
                    for i, element in enumerate(item):
                        what = scalar(element)
                        if what is not None:
                            return f".{key}[{i}]", what
            elif message is not None:
                problem = message.check(item)
                if problem is not None:
                    return f".{key}{problem[0]}", problem[1]
            else:
                assert scalar is not None
                what = scalar(item)
                if what is not None:
                    return "." + key, what
        return None


_SCALARS: dict[int, Check] = {
    FieldDescriptor.TYPE_STRING: _string,
    FieldDescriptor.TYPE_INT64: _int64,
}


def _derive(descriptor: Descriptor) -> _Message:
    """The validator of a message, from its descriptor (nested messages likewise)."""
    fields: dict[str, _Field] = {}
    for f in descriptor.fields:
        repeated = f.is_repeated
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.full_name == TIMESTAMP:
            fields[f.json_name] = _Field(f.json_name, repeated, _timestamp, None)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            fields[f.json_name] = _Field(f.json_name, repeated, None, _derive(f.message_type))
        else:
            base = _SCALARS.get(f.type)
            if base is None:
                raise TypeError(f"{descriptor.full_name}.{f.name}: no check for type {f.type}")
            pattern = _PATTERNS.get((descriptor.full_name, f.json_name))
            if pattern is not None:
                if base is not _string:
                    raise TypeError(f"{descriptor.full_name}.{f.name}: a pattern needs a string")
                check = _string_matching(*pattern)
            else:
                check = _both(base, _FORMATS.get((descriptor.full_name, f.json_name)))
            fields[f.json_name] = _Field(f.json_name, repeated, check, None)
    required = _REQUIRED.get(descriptor.full_name, ())
    unknown = set(required) - set(fields)
    if unknown:  # a typo here would make every answer malformed: fail at import instead
        raise TypeError(f"{descriptor.full_name} has no field {sorted(unknown)}")
    return _Message(descriptor.full_name, fields, required)


def _both(base: Check, fmt: Check | None) -> Check:
    if fmt is None:
        return base

    def check(value: Any) -> str | None:
        return base(value) or fmt(value)

    return check


IMAGE = _derive(image_pb2.Image.DESCRIPTOR)


# -- answers ------------------------------------------------------------------------------


def check_image(image: Any, request_id: str, where: str = "Image") -> None:
    """Raise MalformedAnswer unless ``image`` is a whole, well-formed Image."""
    problem = IMAGE.check(image)
    if problem is not None:
        raise _bad(request_id, where + problem[0], problem[1])


def check_list_page(data: Any, request_id: str) -> tuple[list[dict[str, Any]], str]:
    """A ListImagesResponse's images and next page token, every image checked."""
    if not isinstance(data, dict):
        raise _bad(request_id, "ListImagesResponse", f"expected an object, got {_kind(data)}")
    extra = set(data) - {"images", "nextPageToken"}
    if extra:
        raise _bad(request_id, f"ListImagesResponse.{sorted(extra)[0]}", "not a field")
    images = data.get("images", [])
    token = data.get("nextPageToken", "")
    if not isinstance(images, list):
        raise _bad(request_id, "ListImagesResponse.images", f"expected a list, got {_kind(images)}")
    if not isinstance(token, str):
        raise _bad(
            request_id, "ListImagesResponse.nextPageToken", f"expected a string, got {_kind(token)}"
        )
    for i, image in enumerate(images):
        problem = IMAGE.check(image)
        if problem is not None:
            image_id = image.get("id") if isinstance(image, dict) else None
            named = f" (image {image_id})" if isinstance(image_id, str) else ""
            raise _bad(request_id, f"images[{i}]{problem[0]}{named}", problem[1])
    return images, token


def check_operation(
    data: Any,
    request_id: str,
    *,
    operation_id: str | None = None,
    image_id: str | None = None,
) -> dict[str, Any]:
    """An Operation, strictly as the cloud defines it, and consistent with the request:
    its id is the one asked for, its DeleteImageMetadata names the image deleted, and a
    done operation has exactly one of ``response`` and ``error``."""
    if not isinstance(data, dict):
        raise _bad(request_id, "Operation", f"expected an object, got {_kind(data)}")
    try:
        message = json_format.ParseDict(
            data, operation_pb2.Operation(), ignore_unknown_fields=False
        )
    except json_format.ParseError as exc:
        raise _bad(request_id, "Operation", str(exc)) from None
    if not message.id:
        raise _bad(request_id, "Operation.id", "missing")
    if operation_id is not None and message.id != operation_id:
        raise _bad(request_id, "Operation.id", f"asked for {operation_id}, got {message.id}")
    if image_id is not None:
        meta = data.get("metadata")
        named = meta.get("imageId") if isinstance(meta, dict) else None
        if named != image_id:
            raise _bad(
                request_id, "Operation.metadata.imageId", f"expected {image_id}, got {named!r}"
            )
    outcome = [key for key in ("response", "error") if key in data]
    if message.done and len(outcome) != 1:
        raise _bad(request_id, "Operation", "done, but not with exactly one of response, error")
    if not message.done and outcome:
        raise _bad(request_id, "Operation", f"not done, but has {outcome[0]}")
    if "error" in data and message.error.code == GrpcCode.OK:
        raise _bad(request_id, "Operation.error.code", "an error with code 0 (OK)")
    return data


def api_error_code(data: Any) -> int | None:
    """The gRPC code of an upstream error body, or None when the body is not the
    cloud's error (google.rpc.Status JSON: ``code``, ``message``, ``details``; a
    message is always there, details only of the ``{"@type": …}`` shape)."""
    if not isinstance(data, dict) or not isinstance(data.get("code"), int):
        return None
    # The cloud's errors always say what went wrong: a bare {"code": 5} is not one of them.
    if isinstance(data["code"], bool) or not isinstance(data.get("message"), str):
        return None
    details = data.get("details", [])
    if not isinstance(details, list) or not all(
        isinstance(d, dict) and isinstance(d.get("@type"), str) for d in details
    ):
        return None
    try:
        # Details of types this build does not know are dropped, not fatal: the code is
        # what the caller acts on.
        known = [d for d in details if _known_any(d["@type"])]
        json_format.ParseDict(
            {**data, "details": known}, status_pb2.Status(), ignore_unknown_fields=False
        )
    except json_format.ParseError:
        return None
    code = int(data["code"])
    return code if code in GrpcCode._value2member_map_ else None


def _known_any(type_url: str) -> bool:
    name = type_url.rsplit("/", 1)[-1]
    try:
        descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return False
    return True


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
