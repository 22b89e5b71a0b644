"""The image encoder against protobuf itself: byte for byte what ``json_format`` makes.

``mirror.image_wire`` writes an image's JSON straight to ``Image`` wire bytes.
The reference is ``json_format.ParseDict(doc, Image(), ignore_unknown_fields=True)
.SerializeToString()``: for every generated doc the encoder gives the same bytes,
or the same error. The generated shapes cover the upstream's (the simulator's
pages), unknown keys, proto field names as keys, nulls, wrong types, int64 as
strings and numbers of every size, and RFC 3339 timestamps right and wrong.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yandex.cloud.containerregistry.v1 import image_pb2, image_service_pb2

from mirror import image_wire
from mirror.grpc_api.wire_cache import ENTRY_OVERHEAD, LOOKUPS, ImageWireCache
from mirror.grpc_wire import image_message, list_response
from mirror.image_wire import (
    doc_bytes,
    image_bytes,
    page_of_images,
    python_image_bytes,
    python_page_of_images,
    varint,
)
from mirror.model import doc_template_values, render_doc_template

Encoder = Callable[[Any], bytes]


def native_image_bytes(image: Any) -> bytes:
    """The C encoder alone, its declines (None) passed to ``json_format`` (not to Python)."""
    if image_wire.NATIVE is None:
        pytest.skip("mirror._image_wire is not built")
    wire = image_wire.NATIVE.image(image)
    if wire is not None:
        return wire
    message = image_pb2.Image()
    json_format.ParseDict(image, message, ignore_unknown_fields=True)
    return message.SerializeToString()


# Each encoder on its own: the Python one (the fallback) and the C one. ``image_bytes``
# chains them (C's bytes, else Python's), so both equal to json_format make it equal too.
ENCODERS = pytest.mark.parametrize(
    "encoder", [python_image_bytes, native_image_bytes], ids=["python", "c"]
)


def test_ci_builds_the_c_encoder() -> None:
    """CI (``CI=true``) must never run the slow path unnoticed: the C module is built and used."""
    if os.environ.get("CI") != "true":
        pytest.skip("only CI insists on the C encoder")
    from mirror import _image_wire  # an ImportError here: setup.py did not build it

    assert image_wire.NATIVE is _image_wire, "built, but its tags differ from the SDK's"


def reference(doc: Any) -> bytes | type[BaseException]:
    message = image_pb2.Image()
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except Exception as exc:
        return type(exc)
    return message.SerializeToString()


def encoded(doc: Any, encoder: Encoder = image_bytes) -> bytes | type[BaseException]:
    try:
        return encoder(doc)
    except Exception as exc:
        return type(exc)


texts = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8"), max_size=200),  # long and non-ASCII
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),  # lone surrogates
    st.sampled_from(["", "crp0123456789abcdefgh", "sha256:" + "ab" * 32]),
)
int64s = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.sampled_from(["0", "007", "1 ", " 1", "+5", "1_000", "1.0", "", "١٢", "9" * 19, "9" * 25]),
    st.sampled_from([1.0, 2.5, 1e20, True, False]),
)


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.text(max_size=30), st.integers(), st.none()))
    year = draw(st.sampled_from(["0000", "0001", "1969", "1970", "2022", "9999", "12345", "99"]))
    month = draw(st.sampled_from(["01", "02", "12", "13", "1", "00"]))
    day = draw(st.sampled_from(["01", "28", "29", "30", "31", "32"]))
    clock = draw(
        st.sampled_from(["00:00:00", "23:59:59", "12:34:56", "24:00:00", "00:00:60", "1:2:3"])
    )
    fraction = draw(
        st.one_of(st.just(""), st.text("0123456789", max_size=11).map(lambda d: "." + d))
    )
    zone = draw(
        st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-11:59", "+99:99", "+0530", ""])
    )
    sep = draw(st.sampled_from(["T", "T", "T", "t", " "]))
    return f"{year}-{month}-{day}{sep}{clock}{fraction}{zone}"


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``values``; sometimes a null or a value of a wrong type."""
    return st.one_of(
        values,
        values,
        values,
        st.none(),
        st.integers(),
        st.lists(st.just("x"), max_size=1),
        st.just({}),
    )


extras = st.dictionaries(
    st.sampled_from(["someNewField", "compressed_size", "created_at", "[x.y]", "urls", "@type"]),
    st.one_of(st.integers(), st.text(max_size=3), st.none()),
    max_size=2,
)


valid_texts = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["", "crp0123456789abcdefgh", "sha256:" + "ab" * 32]),
)
valid_int64s = st.one_of(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**63 - 1).map(str),
    st.sampled_from(["0", 0, "1", "5538", "9223372036854775807"]),
)


@st.composite
def valid_timestamps(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes())
    fraction = draw(
        st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(lambda d: "." + d))
    )
    zone = draw(st.sampled_from(["Z", "+00:00", "-00:00", "+05:30", "-11:59", "+14:00"]))
    return moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction + zone


@st.composite
def blobs(draw: st.DrawFn, clean: bool = False) -> Any:
    text, int64, wrap = (
        (valid_texts, valid_int64s, lambda v: v) if clean else (texts, int64s, maybe)
    )
    fields = {
        "id": wrap(text),
        "digest": wrap(text),
        "size": wrap(int64),
        "urls": wrap(st.lists(text if clean else st.one_of(text, text, st.none()), max_size=3)),
    }
    blob = {key: draw(value) for key, value in fields.items() if draw(st.integers(0, 4))}
    if draw(st.integers(0, 4)) == 0:
        blob.update(draw(extras))
    if clean:
        return blob
    return blob if draw(st.integers(0, 30)) else draw(st.sampled_from([None, "x", 1, []]))


@st.composite
def images(draw: st.DrawFn, clean: bool = False) -> Any:
    """Docs of every shape; ``clean``: well-typed ones (the encoder's own path, mostly)."""
    text, int64, wrap = (
        (valid_texts, valid_int64s, lambda v: v) if clean else (texts, int64s, maybe)
    )
    fields = {
        "id": wrap(text),
        "name": wrap(text),
        "digest": wrap(text),
        "compressedSize": wrap(int64),
        "config": blobs(clean),
        "layers": wrap(st.lists(blobs(clean), max_size=4)),
        "tags": wrap(st.lists(text if clean else st.one_of(text, text, st.none()), max_size=3)),
        "createdAt": valid_timestamps() if clean else timestamps(),
    }
    image = {key: draw(value) for key, value in fields.items() if draw(st.integers(0, 5))}
    if not clean and draw(st.integers(0, 4)) == 0:
        image.update(draw(extras))
    elif clean and draw(st.integers(0, 4)) == 0:
        image["someNewField"] = draw(st.one_of(st.integers(), st.text(max_size=3)))
    return image


HYPOTHESIS = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@ENCODERS
@HYPOTHESIS
@given(image=images(clean=True))
def test_well_typed_docs_encode_as_json_format_would(encoder: Encoder, image: Any) -> None:
    assert encoded(image, encoder) == reference(image)


@ENCODERS
@HYPOTHESIS
@given(image=images())
def test_every_shape_encodes_as_json_format_would(encoder: Encoder, image: Any) -> None:
    assert encoded(image, encoder) == reference(image)


@ENCODERS
@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(),
    st.integers(0, 999_999_999),
    st.integers(0, 9),
    st.sampled_from(["Z", "+00:00", "-03:00", "+14:00", "-23:59"]),
)
def test_timestamps_encode_as_from_json_string(
    encoder: Encoder, moment: Any, nanos: int, digits: int, zone: str
) -> None:
    fraction = f".{nanos:09d}"[: digits + 1] if digits else ""
    image = {"createdAt": moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction + zone}
    assert encoded(image, encoder) == reference(image)


@pytest.mark.parametrize(
    "n", [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**63, 2**64 - 1]
)
def test_varint(n: int) -> None:
    ours = varint(n)
    assert ours[-1] < 0x80 and all(b >= 0x80 for b in ours[:-1])
    assert sum((b & 0x7F) << (7 * i) for i, b in enumerate(ours)) == n


async def simulator_pages() -> list[tuple[bytes, list[dict[str, Any]], str]]:
    from mirror.listing import parse_list_request
    from mirror.upstream.simulator import Simulator, SimulatorConfig
    from mirror.upstream.simulator.paging import list_body, list_page

    sim = Simulator.from_config(SimulatorConfig(images=3000, seed=4))
    pages = []
    for folder in sim.registry.model.folder_ids[:2]:
        request = parse_list_request({"folderId": folder, "pageSize": "1000"})
        refs, token = await list_page(sim.registry, request, sim.faults.page_token_style)
        body = list_body(sim.registry, refs, token)
        raw = body if isinstance(body, bytes) else body.encode()
        pages.append((raw, [sim.registry.record(ref).to_json() for ref in refs], token))
    return pages


async def test_the_upstreams_pages_take_the_fast_path_and_equal_json_format() -> None:
    """The simulator's images (the upstream's shape) never need json_format, and match it."""
    for body, docs, token in await simulator_pages():
        slow = json_format.Parse(body, image_service_pb2.ListImagesResponse())
        assert len(slow.images) == len(docs) and token
        parsed = [orjson.loads(orjson.dumps(doc)) for doc in docs]
        fast = [image_wire._image(doc) for doc in parsed]  # no fallback
        assert page_of_images(fast, token) == slow.SerializeToString()
        assert python_page_of_images(iter(fast), token) == slow.SerializeToString()
        if image_wire.NATIVE is not None:  # the C encoder takes every one of them, no fallback
            assert [image_wire.NATIVE.image(doc) for doc in parsed] == fast
            assert [image_wire.NATIVE.doc(orjson.dumps(doc)) for doc in docs] == fast
        assert list_response(body) == slow
        assert image_message(docs[0]) == slow.images[0]
    assert list_response(b"{}") == image_service_pb2.ListImagesResponse()
    assert page_of_images([], "") == python_page_of_images([], "") == b""
    assert page_of_images([b"x"], None) == python_page_of_images([b"x"], None)  # type: ignore[arg-type]
    long_token = "t" * 300  # a length of two varint bytes
    assert page_of_images([b"x" * 200], long_token) == python_page_of_images(
        [b"x" * 200], long_token
    )


def test_unknown_keys_are_dropped_and_sdk_fields_by_proto_name_kept() -> None:
    base = {"id": "crpA", "compressedSize": "10", "createdAt": "2022-09-27T22:29:52.893Z"}
    assert image_bytes({**base, "someNewField": {"a": 1}}) == image_bytes(base)
    by_proto_name = {"id": "crpA", "compressed_size": "10", "created_at": base["createdAt"]}
    assert image_bytes(by_proto_name) == image_bytes(base) == reference(base)
    assert image_pb2.Image.FromString(image_bytes(base)).created_at.nanos == 893_000_000


def test_the_cache_answers_a_doc_seen_before_and_stays_in_its_bounds() -> None:
    docs = [
        orjson.dumps({"id": f"crp{i:017d}", "name": "r/x", "compressedSize": str(i + 1)})
        for i in range(50)
    ]
    hits, misses = LOOKUPS.labels("hit"), LOOKUPS.labels("miss")
    cache = ImageWireCache(max_bytes=10 * (len(doc_bytes(docs[0])) + ENTRY_OVERHEAD))
    before = (hits._value.get(), misses._value.get())
    assert cache.page(docs[:3], "t") == page_of_images([doc_bytes(d) for d in docs[:3]], "t")
    assert cache.image(docs[0]) == doc_bytes(docs[0])
    assert (hits._value.get() - before[0], misses._value.get() - before[1]) == (1, 3)
    changed = docs[0].replace(b'"r/x"', b'"r/y"')  # the same image id, another row version
    assert image_pb2.Image.FromString(cache.image(changed)).name == "r/y"
    for doc in docs:
        cache.image(doc)
    assert len(cache) == 10 and cache.size <= cache.max_bytes
    off = ImageWireCache(max_bytes=0)
    assert off.image(docs[1]) == doc_bytes(docs[1]) and len(off) == 0


@ENCODERS
@pytest.mark.parametrize(
    "size", ["0", "00", "1", "007", 0, 1, "9223372036854775807", "9223372036854775808", "-1"]
)
@pytest.mark.parametrize("blob_id", ["", "a", "a" * 127, "a" * 128, "é", 'a"b', "\ud800"])
def test_the_usual_layer_shape_at_its_edges(encoder: Encoder, size: Any, blob_id: str) -> None:
    layer = {"id": blob_id, "digest": "sha256:" + "cd" * 32, "size": size}
    image = {
        "id": "crpA",
        "config": layer,
        "layers": [layer, {"digest": "d", "size": size, "id": blob_id}],
    }
    assert encoded(image, encoder) == reference(image)


EDGES = [
    {},
    {"config": {}},
    {"layers": []},
    {"layers": [{}]},
    {"tags": []},
    {"tags": ["", "latest", "é" * 100]},
    {"id": "x" * 20_000, "tags": ["y" * 300]},  # lengths of 2 and 3 varint bytes
    {"layers": [{"urls": ["u" * 200, ""]}], "config": {"size": 2**63 - 1}},
    {"compressedSize": True},
    {"compressedSize": 1.0},
    {"compressedSize": 2**63},
    {"compressedSize": -1},
    {"compressedSize": 2**70},
    {"compressedSize": "٣"},
    {"compressedSize": "1" * 20},
    {"id": None, "name": None, "config": None, "layers": None, "tags": None, "createdAt": None},
    {"tags": [None]},
    {"layers": [None]},
    {"layers": ({},)},
    {"id": "a", "unknown": 1},
    {"config": {"id": "a", "unknown": 1}},
    {"compressed_size": "5"},
    {"config": {"size": "5", "urls": "notalist"}},
    {"createdAt": "1970-01-01T00:00:00Z"},
    {"createdAt": "1970-01-01T00:00:00.000000000Z"},
    {"createdAt": "1969-12-31T23:59:59.999999999Z"},
    {"createdAt": "0001-01-01T00:00:00Z"},
    {"createdAt": "0001-01-01T00:00:00+00:01"},
    {"createdAt": "0001-01-01T00:00:00-00:01"},
    {"createdAt": "9999-12-31T23:59:59Z"},
    {"createdAt": "9999-12-31T23:59:59-00:01"},
    {"createdAt": "9999-12-31T23:59:59+99:99"},
    {"createdAt": "2000-02-29T12:00:00Z"},
    {"createdAt": "1900-02-29T12:00:00Z"},
    {"createdAt": "2100-02-28T12:00:00.5+05:30"},
    {"createdAt": "2022-09-27T22:29:52.1234567890Z"},
    {"createdAt": "2022-09-27T22:29:52.Z"},
    {"createdAt": "2022-09-27T22:29:52"},
    {"createdAt": "2022-09-27T22:29:52+05:3"},
    {"createdAt": "2022-09-27T22:29:52+0530"},
    {"createdAt": "2022-09-27T22:29:52Zx"},
    {"createdAt": "2022-09-27T24:00:00Z"},
    {"createdAt": "2022-09-27T23:60:00Z"},
    {"createdAt": "2022-09-27T23:59:60Z"},
    {"createdAt": "2022-13-27T23:59:59Z"},
    {"createdAt": "2022-04-31T23:59:59Z"},
    {"createdAt": "0000-01-01T00:00:00Z"},
    {"createdAt": "２022-09-27T22:29:52Z"},
    {"createdAt": 1664317792},
]


@ENCODERS
@pytest.mark.parametrize("image", EDGES, ids=range(len(EDGES)))
def test_edge_cases_encode_as_json_format_would(encoder: Encoder, image: Any) -> None:
    assert encoded(image, encoder) == reference(image)


class Str(str):
    pass


def test_the_c_encoder_declines_what_it_does_not_know() -> None:
    """None, so the Python encoder judges: subclasses, unknown keys, values out of range."""
    if image_wire.NATIVE is None:
        pytest.skip("mirror._image_wire is not built")
    native = image_wire.NATIVE.image
    declined = [
        [],
        {"id": Str("a")},
        {"unknown": 1},
        {"config": {"unknown": 1}},
        {"compressedSize": 2**63},
        {"compressedSize": "1.0"},
        {"createdAt": "2022-09-27T22:29:52+0530"},
        {"tags": [None]},
        {"id": "\ud800"},
    ]
    for image in declined:
        assert native(image) is None, image
        assert encoded(image) == encoded(image, python_image_bytes) == reference(image)
    assert native({"id": "a"}) == python_image_bytes({"id": "a"})


def test_a_shared_layer_is_encoded_once_per_field_and_the_memo_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(image_wire, "BLOB_MEMO_MAX", 4)
    monkeypatch.setattr(image_wire, "_BLOB_MEMO", {})
    shared = {"id": "crpshared", "digest": "sha256:" + "ef" * 32, "size": "77"}
    image = {"config": dict(shared), "layers": [dict(shared), dict(shared)]}
    # One key as config, one as layer: the tags differ.
    assert encoded(image, python_image_bytes) == reference(image)
    assert len(image_wire._BLOB_MEMO) == 2
    for i in range(10):
        other = {**shared, "size": str(100 + i)}
        assert encoded({"layers": [other]}, python_image_bytes) == reference({"layers": [other]})
        assert len(image_wire._BLOB_MEMO) <= 4
    assert encoded({"layers": [{**shared, "size": 77}]}, python_image_bytes) == reference(
        {"layers": [{**shared, "size": 77}]}
    )


# --- The JSON text itself (``doc_bytes``): the C module reads the usual text without orjson.


def text_reference(text: bytes) -> bytes | type[BaseException]:
    """What ``orjson.loads`` then ``json_format`` make of a text (the production fallback)."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return orjson.JSONDecodeError
    return reference(parsed)


def doc_encoded(text: bytes) -> bytes | type[BaseException]:
    try:
        return doc_bytes(text)
    except Exception as exc:
        return type(exc)


def texts_of(image: Any) -> list[bytes]:
    """The image as orjson writes it, as jsonb's text does (spaces), and ASCII-escaped."""
    import json

    out = [json.dumps(image).encode()]  # non-ASCII as \\u escapes; big ints as they are
    try:
        out.append(orjson.dumps(image))
        out.append(json.dumps(image, ensure_ascii=False, separators=(", ", ": ")).encode())
    except (TypeError, UnicodeEncodeError, orjson.JSONEncodeError):
        pass  # a lone surrogate or an int orjson does not write
    return out


@HYPOTHESIS
@given(images(clean=True))
def test_well_typed_texts_encode_as_json_format_would(image: Any) -> None:
    for text in texts_of(image):
        assert doc_encoded(text) == text_reference(text)


@HYPOTHESIS
@given(images())
def test_texts_of_every_shape_encode_as_json_format_would(image: Any) -> None:
    for text in texts_of(image):
        assert doc_encoded(text) == text_reference(text)


EDGE_TEXTS = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b" {} ",
    b'\xef\xbb\xbf{"id":"a"}',
    b'{"id":"a"}{"id":"b"}',
    b'{"id":"a"} x',
    b'{"id":"a"',
    b'{"id":"a",}',
    b'{"id":"a" "name":"b"}',
    b'{"id":"a","id":"b"}',
    b'{"tags":[],"tags":[]}',
    b'{"config":{},"config":null}',
    b'{"config":{"size":"5","size":"6"}}',
    b'{"id":"\\u0061"}',
    b'{"\\u0069d":"a"}',
    b'{"id":"\xc3\xa9"}',
    b'{"id":"\xff"}',
    b'{"id":"a\tb"}',
    b'{"id":true}',
    b'{"id":nul}',
    b'{"id":nullx}',
    b'{"id":null}',
    b'{"id":""}',
    b'{"id":1}',
    b'{"compressedSize":0}',
    b'{"compressedSize":007}',
    b'{"compressedSize":"007"}',
    b'{"compressedSize":1e3}',
    b'{"compressedSize":1.0}',
    b'{"compressedSize":-1}',
    b'{"compressedSize":12a}',
    b'{"compressedSize":"12a"}',
    b'{"compressedSize":9223372036854775807}',
    b'{"compressedSize":9223372036854775808}',
    b'{"compressedSize":"9223372036854775808"}',
    b'{"compressedSize":123456789012345678901}',
    b' {\n\t"id" : "a" ,\r\n "name":"b" } \n',
    b'{"config":null,"layers":null,"tags":null,"createdAt":null,"compressedSize":null}',
    b'{"config":"a"}',
    b'{"config":[]}',
    b'{"config":{"other":1}}',
    b'{"layers":[null]}',
    b'{"layers":[{}]}',
    b'{"layers":[]}',
    b'{"layers":[ ]}',
    b'{"layers":[{"id":"a"},]}',
    b'{"layers":[{"id":"a"}{"id":"b"}]}',
    b'{"layers":{"id":"a"}}',
    b'{"layers":[{"urls":["a",""]},{"urls":[]},{"urls":null}]}',
    b'{"layers":[{"urls":"a"}]}',
    b'{"layers":[{"urls":[1]}]}',
    b'{"tags":["a",]}',
    b'{"tags":[1]}',
    b'{"tags":[null]}',
    b'{"tags":"a"}',
    b'{"tags":["' + b"t" * 300 + b'"],"id":"' + b"x" * 20_000 + b'"}',
    b'{"createdAt":"2022-09-27T22:29:52.5Z"}',
    b'{"createdAt":"2022-09-27T22:29:52.5+05:30"}',
    b'{"createdAt":"2022-09-27T22:29:52.5"}',
    b'{"createdAt":1}',
    b'{"unknown":1}',
    b'{"compressed_size":"5"}',
]


@pytest.mark.parametrize("text", EDGE_TEXTS, ids=range(len(EDGE_TEXTS)))
def test_edge_texts_encode_as_orjson_and_json_format_would(text: bytes) -> None:
    assert doc_encoded(text) == text_reference(text)


def test_the_c_reader_takes_the_indexs_texts_and_declines_the_rest() -> None:
    """The usual text never reaches orjson; an escape, a duplicate or a stray byte does."""
    if image_wire.NATIVE is None:
        pytest.skip("mirror._image_wire is not built")
    read = image_wire.NATIVE.doc
    usual = {
        "id": "crpA",
        "name": "r/x",
        "config": {"id": "crpB", "digest": "sha256:" + "ab" * 32, "size": "5"},
        "layers": [{"id": "crpC", "digest": "sha256:" + "cd" * 32, "size": 7}],
        "tags": ["latest"],
        "createdAt": "2022-09-27T22:29:52.893Z",
        "compressedSize": "12",
    }
    for text in texts_of(usual):
        assert read(text) == reference(usual), text
    for text in [b'{"id":"\\u0061"}', b'{"id":"a","id":"b"}', b'{"id":"\xc3\xa9"}', b"{} x"]:
        assert read(text) is None, text
    assert read(bytearray(b"{}")) is None  # only bytes are read here


async def test_mutated_texts_are_declined_or_encoded_as_orjson_and_json_format_would() -> None:
    """Bytes changed, inserted, cut at random in the upstream's texts: never a wrong answer.

    (Run under AddressSanitizer too while writing the reader: 60,000 such texts, no error.)
    """
    import json
    import random

    if image_wire.NATIVE is None:
        pytest.skip("mirror._image_wire is not built")
    read = image_wire.NATIVE.doc
    texts = [orjson.dumps(doc) for _, docs, _ in await simulator_pages() for doc in docs[:100]]
    texts += [json.dumps(orjson.loads(text)).encode() for text in texts[:50]]  # jsonb's spaces
    alphabet = b'{}[]",: 0123456789.eE-+nultrfasTZ\\\t\n\x00\x80\xc3\xa9'
    rng = random.Random(14)
    accepted = 0
    for _ in range(4000):
        text = bytearray(rng.choice(texts))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            edit = rng.randrange(4)
            if edit == 0 and text:
                text[min(at, len(text) - 1)] = rng.choice(alphabet)
            elif edit == 1:
                text[at:at] = bytes((rng.choice(alphabet),))
            elif edit == 2:
                del text[at : at + rng.randint(1, 5)]
            else:
                del text[at:]
        wire = read(bytes(text))
        if wire is not None:
            accepted += 1
            assert wire == text_reference(bytes(text)), bytes(text)
        assert doc_encoded(bytes(text)) == text_reference(bytes(text)), bytes(text)
    assert accepted > 100  # the edits that keep a text of the usual shape are read in C


# The C module's filling in of a stored template (``filled_doc``) against mirror/model.py:
# text without "%", and the placeholders and "%%" a template holds; the keys as
# PostgreSQL's array_send writes a bytea[] (tests/integration/test_doc_template_sql.py
# reads real ones).
_TEMPLATE_PIECES_OK = ["%%", "%1$s", "%2$s", "%3$s", "%4$s", "%5$s", "%6$s", "%7$s", "%12$s"]
_TEMPLATE_PIECES = st.one_of(
    st.text(st.characters(blacklist_characters="%", blacklist_categories=("Cs",)), max_size=6),
    st.sampled_from([*_TEMPLATE_PIECES_OK, "é", "\U0001f600"]),
)
BYTEA_OID = 17


def array_sent(elements: list[bytes], oid: int = BYTEA_OID) -> bytes:
    if not elements:
        return struct.pack(">iiI", 0, 0, oid)
    head = struct.pack(">iiIii", 1, 0, oid, len(elements), 1)
    return head + b"".join(struct.pack(">i", len(e)) + e for e in elements)


@given(
    pieces=st.lists(_TEMPLATE_PIECES, max_size=20),
    digest=st.text(max_size=80),
    keys=st.lists(st.binary(max_size=40), max_size=8),
)
def test_the_c_module_fills_a_template_as_the_reference_does(
    pieces: list[str], digest: str, keys: list[bytes]
) -> None:
    template = "".join(pieces)
    sent = array_sent(keys)
    assert image_wire.array_elements(sent) == keys
    values = doc_template_values(digest, keys)
    try:
        expected: bytes | None = render_doc_template(template, values).encode()
    except IndexError:  # a placeholder that names no value
        expected = None
    if expected is not None:
        assert image_wire.filled_doc(template.encode(), digest, sent) == expected
    if image_wire.NATIVE is None:
        pytest.skip("mirror._image_wire is not built")
    assert image_wire.NATIVE.fill(template.encode(), digest, sent) == expected


INT8_OID = 20


@given(
    pieces=st.lists(_TEMPLATE_PIECES, max_size=20),
    digest=st.text(max_size=80),
    blobs=st.lists(
        st.tuples(
            st.binary(max_size=40),
            st.integers(-(2**63), 2**63 - 1),
            st.text(st.characters(blacklist_characters=" ", blacklist_categories=("Cs",))),
        ),
        max_size=8,
    ),
    image_id=st.text(max_size=20),
    name=st.text(max_size=40),
)
def test_the_c_module_fills_a_template_of_the_second_kind_as_the_reference_does(
    pieces: list[str], digest: str, blobs: list[tuple[bytes, int, str]], image_id: str, name: str
) -> None:
    template = "".join(pieces)
    keys = array_sent([b[0] for b in blobs])
    sizes = array_sent([b[1].to_bytes(8, "big", signed=True) for b in blobs], INT8_OID)
    ids = " ".join(b[2] for b in blobs)
    values = doc_template_values(
        digest, [b[0] for b in blobs], [b[1] for b in blobs], ids, image_id, name
    )
    try:
        expected: bytes | None = render_doc_template(template, values).encode()
    except IndexError:  # a placeholder that names no value
        expected = None
    if expected is not None:
        filled = image_wire.filled_doc(template.encode(), digest, keys, sizes, ids, image_id, name)
        assert filled == expected
    if image_wire.NATIVE is None:
        pytest.skip("mirror._image_wire is not built")
    args = (template.encode(), digest, keys, sizes, ids, image_id, name)
    assert image_wire.NATIVE.fill(*args) == expected


def test_the_c_module_refuses_what_is_no_template() -> None:
    if image_wire.NATIVE is None:
        pytest.skip("mirror._image_wire is not built")
    keys = array_sent([b"\x01" * 32])
    for broken in (b"%", b"a%b", b"%0$s", b"%1$", b"%1s", b"%x$s", b"%9$s"):
        assert image_wire.NATIVE.fill(broken, "sha256:", keys) is None, broken
    assert image_wire.NATIVE.fill(b"%5$s", "", keys) == b"01" * 32
    for not_sent in (b"", keys[:-1], struct.pack(">iiI", 2, 0, BYTEA_OID) + keys[12:]):
        assert image_wire.NATIVE.fill(b"%5$s", "", not_sent) is None, not_sent
