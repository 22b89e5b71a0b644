"""An image's upstream JSON straight to the protobuf wire bytes of the SDK's ``Image``.

A List page over gRPC is ``ListImagesResponse``: a repeated ``images`` field
(each image a length-delimited sub-message) and ``next_page_token``. Its bytes
are built here from the index's JSON docs without message objects:
``json_format`` walks descriptors in Python and even the messages' constructors
cost ~40 us an image (a page of 100 with its layers: ~4 ms, the most of a gRPC
List). The encoder writes the fields in field-number order with proto3's rules
(a default scalar or empty list is absent, a message given is present even
when empty), so its bytes equal ``json_format.ParseDict(doc, Image())
.SerializeToString()``, which ``tests/unit/test_image_wire.py`` holds over
many shapes.

Only the plain shape is encoded here: JSON keys under their JSON names, strings
as strings, int64 as decimal strings or ints in range, ``createdAt`` as RFC
3339 with ``T``, ``Z`` or a ``+hh:mm`` offset. Anything else (a null, a field
of the SDK this code does not encode, a proto field name as key, an odd
timestamp) makes the image take ``json_format``, so every field the SDK knows
is kept and every oddity is judged by protobuf itself. Keys the SDK does not
know are dropped, as ``json_format`` does with ``ignore_unknown_fields``.
A layer of the usual shape seen before (layers are shared between images) is
taken from a bounded memo of its bytes.

The same fast path is also written in C (``mirror/_image_wire.c``, built by
``setup.py`` when the package is installed): ``image_bytes`` asks it first and
takes the Python encoder for whatever it declines (None: an unknown key, a
null, an odd value), so the C module changes speed only. ``doc_bytes`` goes
further: the C module reads the usual JSON text itself (plain ASCII strings,
integers, no escapes), without ``orjson`` making Python objects; any other text
takes ``orjson.loads`` and the encoders. A page of 100 images: ~1.3-1.6 ms in
Python (orjson ~0.2-0.4 ms of it), ~0.1 ms in C. Without a compiler the package
still works, in Python; ``NATIVE`` says which (CI insists on C). The C module also fills an image's
stored JSON template back in (``filled_doc``), for the API's pages and Gets.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from yandex.cloud.containerregistry.v1 import blob_pb2, image_pb2, image_service_pb2

from mirror.model import doc_template_values, render_doc_template

try:
    from mirror import _image_wire
except ImportError:  # built without a C compiler: the Python encoder alone
    _image_wire = None  # type: ignore[assignment]

_WIRE_VARINT = 0
_WIRE_LEN = 2
_INT64_LIMIT = 1 << 63
_UINT64_MASK = (1 << 64) - 1
# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_TIMESTAMP_MIN_SECONDS = -62_135_596_800
_TIMESTAMP_MAX_SECONDS = 253_402_300_799
_EPOCH = datetime(1970, 1, 1)
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_ONE_BYTE = [bytes((n,)) for n in range(128)]


class _Slow(Exception):
    """This document needs ``json_format``."""


def varint(n: int) -> bytes:
    """``n`` (0 <= n < 2**64) as a protobuf base-128 varint."""
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(descriptor: Descriptor, json_name: str, kind: int, wire: int) -> bytes:
    """The tag of ``json_name`` (whose type must be ``kind``: the SDK changed if not)."""
    for field in descriptor.fields:
        if field.json_name == json_name:
            if field.type != kind:
                raise ImportError(f"{descriptor.full_name}.{json_name}: unexpected type")
            return varint(field.number << 3 | wire)
    raise ImportError(f"{descriptor.full_name} has no field {json_name}")


_S, _I64, _MSG = (
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_MESSAGE,
)
_IMAGE = image_pb2.Image.DESCRIPTOR
_BLOB = blob_pb2.Blob.DESCRIPTOR
_PAGE = image_service_pb2.ListImagesResponse.DESCRIPTOR
_TIMESTAMP = _IMAGE.fields_by_name["created_at"].message_type

IMAGE_ID = _field(_IMAGE, "id", _S, _WIRE_LEN)
IMAGE_NAME = _field(_IMAGE, "name", _S, _WIRE_LEN)
IMAGE_DIGEST = _field(_IMAGE, "digest", _S, _WIRE_LEN)
IMAGE_SIZE = _field(_IMAGE, "compressedSize", _I64, _WIRE_VARINT)
IMAGE_CONFIG = _field(_IMAGE, "config", _MSG, _WIRE_LEN)
IMAGE_LAYERS = _field(_IMAGE, "layers", _MSG, _WIRE_LEN)
IMAGE_TAGS = _field(_IMAGE, "tags", _S, _WIRE_LEN)
IMAGE_CREATED = _field(_IMAGE, "createdAt", _MSG, _WIRE_LEN)
BLOB_ID = _field(_BLOB, "id", _S, _WIRE_LEN)
BLOB_DIGEST = _field(_BLOB, "digest", _S, _WIRE_LEN)
BLOB_SIZE = _field(_BLOB, "size", _I64, _WIRE_VARINT)
BLOB_URLS = _field(_BLOB, "urls", _S, _WIRE_LEN)
SECONDS = _field(_TIMESTAMP, "seconds", _I64, _WIRE_VARINT)
NANOS = _field(_TIMESTAMP, "nanos", FieldDescriptor.TYPE_INT32, _WIRE_VARINT)
PAGE_IMAGES = _field(_PAGE, "images", _MSG, _WIRE_LEN)
PAGE_TOKEN = _field(_PAGE, "nextPageToken", _S, _WIRE_LEN)

_IMAGE_KEYS = frozenset(
    ("id", "name", "digest", "compressedSize", "config", "layers", "tags", "createdAt")
)
_BLOB_KEYS = frozenset(("id", "digest", "size", "urls"))
_BLOB_COMMON = frozenset(("id", "digest", "size"))
# Layers are shared (base images, a repository's versions): a usual blob met before is
# not encoded again. Its key is (tag, id, digest, size) as given; full, the memo starts over.
BLOB_MEMO_MAX = 32_768
_BLOB_MEMO: dict[tuple[Any, ...], bytes] = {}
# A blob of id, digest (not empty) and a non-zero size, framed as a field of at most 127 bytes.
_COMMON_BLOB = b"%b%c" + BLOB_ID + b"%c%b" + BLOB_DIGEST + b"%c%b" + BLOB_SIZE + b"%b"


def _sdk_names(descriptor: Descriptor) -> frozenset[str]:
    return frozenset(n for f in descriptor.fields for n in (f.name, f.json_name))


_IMAGE_SDK_NAMES = _sdk_names(_IMAGE)
_BLOB_SDK_NAMES = _sdk_names(_BLOB)


def _native() -> Any:
    """The C encoder if it was built and writes the tags the SDK's descriptors give, else None."""
    if _image_wire is None:
        return None
    if any(globals()[name] != bytes((tag,)) for name, tag in _image_wire.TAGS.items()):
        return None  # the SDK renumbered a field: the C encoder no longer fits it
    return _image_wire


NATIVE = _native()
_native_image = NATIVE.image if NATIVE is not None else None
_native_doc = NATIVE.doc if NATIVE is not None else None
_native_page = NATIVE.page if NATIVE is not None else None
_native_fill = NATIVE.fill if NATIVE is not None else None


def filled_doc(
    template: bytes,
    digest: str,
    keys: bytes,
    sizes: bytes | None = None,
    blob_ids: str | None = None,
    image_id: str = "",
    name: str = "",
) -> bytes:
    """An image's JSON from its stored template (sql/104, sql/111; ``mirror.model.image_template``).

    ``keys`` and ``sizes``: the row's blob keys and sizes as PostgreSQL's ``array_send``
    gives them (one bytes object, not a Python object an element); ``blob_ids``: the
    row's, not None for a template of the second kind, which also takes the row's
    ``image_id`` and ``name``. The C module fills it in (~1 µs an image); without it, or
    for a template it does not read, ``render_doc_template`` (which raises on a
    placeholder that names no value).
    """
    if _native_fill is not None:
        doc = _native_fill(template, digest, keys, sizes, blob_ids, image_id, name)
        if doc is not None:
            return doc
    blob_sizes = (
        []
        if sizes is None
        else [int.from_bytes(s, "big", signed=True) for s in array_elements(sizes)]
    )
    values = doc_template_values(digest, array_elements(keys), blob_sizes, blob_ids, image_id, name)
    return render_doc_template(template.decode(), values).encode()


def array_elements(sent: bytes) -> list[bytes]:
    """The elements of a one-dimensional ``bytea[]`` (or ``bigint[]``: 8 bytes each) in
    PostgreSQL's binary format."""
    ndim, _flags, _type = struct.unpack_from(">iiI", sent)
    if ndim == 0:
        return []
    if ndim != 1:
        raise ValueError(f"a {ndim}-dimensional array")
    (count, _lower) = struct.unpack_from(">ii", sent, 12)
    elements, at = [], 20
    for _ in range(count):
        (size,) = struct.unpack_from(">i", sent, at)
        if size < 0:
            raise ValueError("a NULL element")
        elements.append(sent[at + 4 : at + 4 + size])
        at += 4 + size
    return elements


def python_image_bytes(image: Any) -> bytes:
    """``image_bytes`` by the Python encoder alone (the C encoder's fallback and reference)."""
    try:
        return _image(image)
    except (_Slow, AttributeError, ValueError, TypeError, OverflowError):
        message = image_pb2.Image()
        json_format.ParseDict(image, message, ignore_unknown_fields=True)
        return message.SerializeToString()


def image_bytes(image: Any) -> bytes:
    """``Image`` (serialized) of one image's JSON, as ``json_format`` would make it."""
    if _native_image is not None:
        wire = _native_image(image)
        if wire is not None:
            return wire
    return python_image_bytes(image)


def doc_bytes(doc: bytes) -> bytes:
    """``Image`` (serialized) of one image's JSON text.

    The C module reads the usual text itself (no Python objects made); any other
    is parsed by ``orjson`` for the encoders.
    """
    if _native_doc is not None:
        wire = _native_doc(doc)
        if wire is not None:
            return wire
    return image_bytes(orjson.loads(doc))


def page_of_images(images: Iterable[bytes], next_page_token: str) -> bytes:
    """``ListImagesResponse`` (serialized): serialized ``Image``s and the token.

    A repeated message field on the wire is its elements one after another, each
    as tag, length and bytes: a page is the images' bytes joined, no message built.
    """
    if _native_page is not None and type(images) is list and type(next_page_token) is str:
        return _native_page(images, next_page_token)
    return python_page_of_images(images, next_page_token)


def python_page_of_images(images: Iterable[bytes], next_page_token: str) -> bytes:
    """``page_of_images`` in Python alone."""
    parts: list[bytes] = []
    for image in images:
        parts += (PAGE_IMAGES, varint(len(image)), image)
    if next_page_token:
        parts.append(_string(PAGE_TOKEN, next_page_token))
    return b"".join(parts)


def _extra_keys(value: dict[str, Any], sdk_names: frozenset[str], known: frozenset[str]) -> None:
    """Keys beyond ``known``: unknown to the SDK are dropped; anything else is ``_Slow``."""
    for key in value.keys() - known:
        if key in sdk_names or key.startswith("["):
            raise _Slow


def _string(tag: bytes, value: Any) -> bytes:
    if type(value) is not str:
        raise _Slow
    data = value.encode()  # a lone surrogate: UnicodeEncodeError, json_format judges
    size = len(data)
    return tag + (_ONE_BYTE[size] if size < 0x80 else varint(size)) + data


def _strings(tag: bytes, values: Any) -> bytes:
    if type(values) is not list:
        raise _Slow
    return b"".join([_string(tag, value) for value in values])


def _int64(tag: bytes, value: Any) -> bytes:
    kind = type(value)
    if kind is str:
        if len(value) > 19 or not (value.isascii() and value.isdigit()):
            raise _Slow
        number = int(value)
    elif kind is int:
        number = value
    else:
        raise _Slow
    if not 0 <= number < _INT64_LIMIT:
        raise _Slow
    return tag + varint(number) if number else b""


def _message(tag: bytes, body: bytes) -> bytes:
    size = len(body)
    return tag + (_ONE_BYTE[size] if size < 0x80 else varint(size)) + body


def _blob(tag: bytes, blob: Any) -> bytes:
    """The blob as the field ``tag``: tag, length, ``Blob``."""
    if type(blob) is not dict:
        raise _Slow
    if blob.keys() == _BLOB_COMMON:  # the usual layer: one bytes format, few calls
        key = (tag, blob["id"], blob["digest"], blob["size"])
        framed = _BLOB_MEMO.get(key)
        if framed is not None:
            return framed
        blob_id = blob["id"].encode()  # not a str: AttributeError, json_format judges
        digest = blob["digest"].encode()
        size = blob["size"]
        if blob_id and digest and len(size) < 19 and size.isdigit() and size.isascii():
            number = int(size)
            size_bytes = varint(number)
            length = 5 + len(blob_id) + len(digest) + len(size_bytes)
            if number and length < 0x80:  # a zero size is absent on the wire
                framed = _COMMON_BLOB % (
                    tag,
                    length,
                    len(blob_id),
                    blob_id,
                    len(digest),
                    digest,
                    size_bytes,
                )
                if len(_BLOB_MEMO) >= BLOB_MEMO_MAX:
                    _BLOB_MEMO.clear()
                _BLOB_MEMO[key] = framed  # its values are all str: no other type equals them
                return framed
    if not blob.keys() <= _BLOB_KEYS:
        _extra_keys(blob, _BLOB_SDK_NAMES, _BLOB_KEYS)
    out = b""
    value = blob.get("id")
    if value is not None and value != "":
        out += _string(BLOB_ID, value)
    value = blob.get("digest")
    if value is not None and value != "":
        out += _string(BLOB_DIGEST, value)
    value = blob.get("size")
    if value is not None:
        out += _int64(BLOB_SIZE, value)
    value = blob.get("urls")
    if value is not None:
        out += _strings(BLOB_URLS, value)
    return _message(tag, out)


def _timestamp(value: Any) -> bytes:
    """``google.protobuf.Timestamp`` of an RFC 3339 text, as ``Timestamp.FromJsonString``."""
    if type(value) is not str:
        raise _Slow
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _Slow
    clock, fraction, sign, zone_h, zone_m = match.groups()
    # The pattern admits only YYYY-MM-DDTHH:MM:SS here; fromisoformat checks the ranges.
    delta = datetime.fromisoformat(clock) - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    # FromJsonString's own rounding, kept so every fraction gives its nanos.
    nanos = round(float("0." + fraction) * 1e9) if fraction else 0
    if sign is not None:
        offset = (int(zone_h) * 60 + int(zone_m)) * 60
        seconds += -offset if sign == "+" else offset
    if not _TIMESTAMP_MIN_SECONDS <= seconds <= _TIMESTAMP_MAX_SECONDS:
        raise _Slow
    out = SECONDS + varint(seconds & _UINT64_MASK) if seconds else b""
    if nanos:
        out += NANOS + varint(nanos)
    return out


def _image(image: Any) -> bytes:
    if type(image) is not dict:
        raise _Slow
    if not image.keys() <= _IMAGE_KEYS:
        _extra_keys(image, _IMAGE_SDK_NAMES, _IMAGE_KEYS)
    parts: list[bytes] = []
    value = image.get("id")
    if value is not None and value != "":
        parts.append(_string(IMAGE_ID, value))
    value = image.get("name")
    if value is not None and value != "":
        parts.append(_string(IMAGE_NAME, value))
    value = image.get("digest")
    if value is not None and value != "":
        parts.append(_string(IMAGE_DIGEST, value))
    value = image.get("compressedSize")
    if value is not None:
        parts.append(_int64(IMAGE_SIZE, value))
    value = image.get("config")
    if value is not None:
        parts.append(_blob(IMAGE_CONFIG, value))
    value = image.get("layers")
    if value is not None:
        if type(value) is not list:
            raise _Slow
        for layer in value:
            parts.append(_blob(IMAGE_LAYERS, layer))
    value = image.get("tags")
    if value is not None:
        parts.append(_strings(IMAGE_TAGS, value))
    value = image.get("createdAt")
    if value is not None:
        parts.append(_message(IMAGE_CREATED, _timestamp(value)))
    return b"".join(parts)
