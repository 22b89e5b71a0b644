"""Pages turned into rows: docs, content hashes, blob references, dedup within a page."""

from __future__ import annotations

import orjson
import pytest

from mirror.errors import MalformedImage
from mirror.ingest.staging import (
    blob_arrays,
    blob_ids,
    content_hash,
    image_record,
    page_images,
)
from mirror.model import digest_key, digest_text, doc_template_values, render_doc_template

IMAGE = {
    "id": "crpb",
    "name": "reg1/team/app",
    "digest": "sha256:ff",
    "compressedSize": "300",
    "config": {"id": "c1", "digest": "sha256:c", "size": "10"},
    "layers": [
        {"id": "l1", "digest": "sha256:1", "size": "100"},
        {"digest": "sha256:2", "size": "200"},
    ],
    "tags": ["latest"],
    "createdAt": "2024-01-01T00:00:00.123456789Z",
}


def test_doc_keeps_the_upstream_json_and_key_order() -> None:
    raw = orjson.dumps(IMAGE)
    [item] = page_images([orjson.loads(raw)])
    assert item.doc == raw
    assert item.content_hash == content_hash(raw) and len(item.content_hash) == 16


def test_page_images_dedupes_and_sorts_by_id() -> None:
    a = IMAGE | {"id": "crpz"}
    b1 = IMAGE | {"id": "crpa", "tags": ["old"]}
    b2 = IMAGE | {"id": "crpa", "tags": ["new"]}
    items = page_images([a, b1, b2])
    assert [i.id for i in items] == ["crpa", "crpz"]
    assert items[0].image["tags"] == ["new"]


def test_malformed_images_are_refused() -> None:
    with pytest.raises(MalformedImage):
        page_images([{"name": "x"}])
    [item] = page_images([IMAGE | {"compressedSize": "lots"}])
    with pytest.raises(MalformedImage):
        image_record(item, None)
    [item] = page_images([IMAGE | {"createdAt": "yesterday"}])
    with pytest.raises(MalformedImage, match="createdAt"):
        image_record(item, None)


def test_image_record_columns() -> None:
    [item] = page_images([IMAGE])
    record = image_record(item, "f1")
    assert record[:7] == (
        "crpb",
        "reg1/team/app",
        "reg1",
        "f1",
        digest_key("sha256:ff"),  # the digest's key (sql/120): an odd digest's text, padded
        300,
        1_704_067_200_123_456_789,  # created_ns: exact nanoseconds, as the API sorts
    )
    assert render_doc_template(
        record[7], doc_template_values(digest_text(record[4]), record[9])
    ) == (item.doc.decode())
    assert record[8] == item.content_hash
    real = IMAGE | {
        "digest": "sha256:" + "ab" * 32,
        "config": {"id": "c1", "digest": "sha256:" + "0c" * 32, "size": "10"},
        "tags": ["100%"],
    }
    [item] = page_images([real])
    record = image_record(item, None)
    values = doc_template_values(digest_text(record[4]), record[9])
    assert record[7] == '{"id":"crpb","name":"reg1/team/app%1$s%4$s",' + (
        '"compressedSize":"300","config":{"id":"c1%1$s%5$s%3$s10"},'
        '"layers":[{"id":"l1%1$s1%3$s100"},{"digest":"sha256:2%3$s200"}],'
        '"tags":["100%%"],"createdAt":"2024-01-01T00:00:00.123456789Z"}'
    )
    assert render_doc_template(record[7], values) == item.doc.decode()
    assert record[12] is None  # a layer without an id, another without a hex digest
    [bare] = page_images([{"id": "crpc", "name": "reg2/x"}])
    assert image_record(bare, None)[5:7] == (0, 0)


def test_blob_arrays_config_first_then_layers() -> None:
    [item] = page_images([IMAGE])
    keys = [digest_key(d) for d in ("sha256:c", "sha256:1", "sha256:2")]
    assert blob_arrays(item) == (keys, [10, 100, 200], True)
    # a layer without an id: the template is of the first kind (no blob ids)
    assert image_record(item, None)[9:] == (keys, [10, 100, 200], True, None)
    [no_config] = page_images([{k: v for k, v in IMAGE.items() if k != "config"}])
    assert blob_arrays(no_config) == (keys[1:], [100, 200], False)
    no_digest = IMAGE | {"config": {"size": "5"}, "layers": [{"size": "1"}, IMAGE["layers"][1]]}
    [item] = page_images([no_digest])
    assert blob_arrays(item) == ([keys[2]], [200], False)  # blobs without a digest: not indexed


def test_digest_keys_are_32_bytes_for_sha256_and_lossless_for_anything_else() -> None:
    sha = "sha256:" + "0123456789abcdef" * 4
    assert digest_key(sha) == bytes.fromhex("0123456789abcdef" * 4)
    assert digest_text(digest_key(sha)) == sha
    for other in ("sha256:" + "0123456789ABCDEF" * 4, "sha256:ff", "x" * 32, "sha512:" + "a" * 128):
        key = digest_key(other)
        assert len(key) != 32 and digest_text(key) == other


def test_a_template_of_the_second_kind_holds_each_blob_as_one_placeholder() -> None:
    hexes = ["0c" * 32, "01" * 32, "02" * 32]
    real = IMAGE | {
        "digest": "sha256:" + "ab" * 32,
        "config": {"id": "c1", "digest": "sha256:" + hexes[0], "size": "10"},
        "layers": [
            {"id": "l1", "digest": "sha256:" + hexes[1], "size": "100"},
            {"id": "l2", "digest": "sha256:" + hexes[2], "size": "200"},
            {"id": "l1", "digest": "sha256:" + hexes[1], "size": "100"},  # the same again
        ],
        "tags": ["100%"],
    }
    [item] = page_images([real])
    assert blob_ids(item) == ["c1", "l1", "l2", "l1"]
    record = image_record(item, None)
    assert record[12] == "c1 l1 l2 l1"
    assert record[7] == '{"id":"%5$s","name":"%6$s%1$s%4$s",' + (
        '"compressedSize":"300","config":%7$s,"layers":[%8$s,%9$s,%10$s],'
        '"tags":["100%%"],"createdAt":"2024-01-01T00:00:00.123456789Z"}'
    )
    values = doc_template_values(
        digest_text(record[4]), record[9], record[10], record[12], *record[:2]
    )
    assert values[4:7] == [
        "crpb",
        "reg1/team/app",
        '{"id":"c1","digest":"sha256:' + hexes[0] + '","size":"10"}',
    ]
    assert render_doc_template(record[7], values) == item.doc.decode()
    # a blob whose object is not as blob_object writes it (a field more): the first kind
    urls = real | {"layers": [real["layers"][0], real["layers"][1] | {"urls": ["u"]}]}
    [item] = page_images([urls])
    record = image_record(item, None)
    assert record[12] is None and "%5$s%3$s10" in record[7] and '"id":"crpb"' in record[7]
    values = doc_template_values(digest_text(record[4]), record[9], record[10], record[12])
    assert render_doc_template(record[7], values) == item.doc.decode()
