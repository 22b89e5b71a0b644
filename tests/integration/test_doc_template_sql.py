"""An image's JSON stored as a template (sql/104): PostgreSQL's ``image_doc`` and the API's
own filling in (``row_json``, the C module) give back what the ingest was given, byte for
byte, for templates and for rows that still hold their doc."""

from __future__ import annotations

import string

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror.api.image_list import row_json
from mirror.api.list_query import IMAGE_PARTS
from mirror.ingest.staging import image_record, page_images
from mirror.model import digest_key, doc_template

HEX = "0123456789abcdef"
hex64 = st.text(HEX, min_size=64, max_size=64)
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12
) | st.sampled_from(["%", "%%", "%1$s", "$s", "100%", "é", string.printable])

INSERT = """
INSERT INTO images (id, name, registry, digest, doc, doc_template, content_hash, created_ns,
                    blob_digests, blob_sizes, blob_ids)
VALUES ($1, coalesce($8, 'crp1/app'), image_registry('crp1'), $2, $3::json, $4, '\\x00', 0, $5,
        coalesce($6::bigint[], '{}'), $7)
"""
# the function (the outbox's readers), and the parts the API fills in itself
SELECT_DOC = f"SELECT image_doc(images), id, name, digest, {IMAGE_PARTS} FROM images WHERE id = $1"


async def both_docs(pool: asyncpg.Pool, image_id: str) -> tuple[str, str]:
    row = await pool.fetchrow(SELECT_DOC, image_id)
    return row["image_doc"], row_json(row).decode()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    image_digest=hex64,
    layers=st.lists(
        st.tuples(hex64, st.integers(0, 2**63 - 1), text | st.just("crpb2fg0csfbuh149ckb")),
        max_size=5,
    ),
    sized=st.booleans(),
    tags=st.lists(text | hex64, max_size=4),
    name=text,
)
async def test_the_server_fills_a_template_as_the_ingest_made_it(
    db_pool: asyncpg.Pool,
    image_digest: str,
    layers: list[tuple[str, int, str]],
    sized: bool,
    tags: list[str],
    name: str,
) -> None:
    # with sizes, blobs as the cloud writes them (a template of the second kind, sql/111,
    # when every id can stand in blob_ids); without, of the first
    upstream = {
        "id": "crpdoc",
        "name": f"crp1/{name}",
        "digest": f"sha256:{image_digest}",
        "layers": [
            {"id": i, "digest": f"sha256:{d}"} | ({"size": str(n)} if sized else {})
            for d, n, i in layers
        ],
        "tags": tags,
    }
    [item] = page_images([upstream])
    record = image_record(item, None)
    await db_pool.execute(
        INSERT, item.id, record[4], None, record[7], record[9], record[10], record[12], record[1]
    )
    try:
        assert await both_docs(db_pool, item.id) == (item.doc.decode(),) * 2
    finally:
        await db_pool.execute("DELETE FROM images WHERE id = $1", item.id)


async def test_a_row_written_before_keeps_its_doc_and_a_row_holds_one_form(
    db_pool: asyncpg.Pool,
) -> None:
    digest = "sha256:" + "ab" * 32
    doc = orjson.dumps({"id": "crpold", "digest": digest}).decode()
    await db_pool.execute(INSERT, "crpold", digest_key(digest), doc, None, [], None, None, None)
    assert await both_docs(db_pool, "crpold") == (doc, doc)
    template = doc_template(doc, digest, [digest_key(digest)])
    assert "%1$s" in template
    await db_pool.execute(
        INSERT, "crpnew", digest_key(digest), None, template, [], None, None, None
    )
    assert await both_docs(db_pool, "crpnew") == (doc, doc)
    for both_or_neither in ((doc, template), (None, None)):
        with pytest.raises(asyncpg.CheckViolationError, match="images_doc_or_template"):
            await db_pool.execute(
                INSERT, "crpbad", digest_key(digest), *both_or_neither, [], None, None, None
            )


async def test_a_template_of_the_second_kind_and_the_sizes_it_reads(db_pool: asyncpg.Pool) -> None:
    blobs = [
        {"id": "crpcfg", "digest": "sha256:" + "0c" * 32, "size": "7311"},
        {"id": "crplayer", "digest": "sha256:" + "12" * 32, "size": str(2**63 - 1)},
    ]
    upstream = {
        "id": "crpkind2",
        "name": "crp1/app",
        "digest": "sha256:" + "ab" * 32,
        "config": blobs[0],
        "layers": [blobs[1], blobs[1]],
        "tags": ["1.0", "100%"],
    }
    [item] = page_images([upstream])
    record = image_record(item, None)
    assert record[12] == "crpcfg crplayer crplayer" and "[%8$s,%9$s]" in record[7]
    args = (record[4], None, record[7], record[9], record[10], record[12], record[1])
    await db_pool.execute(INSERT, item.id, *args)
    try:
        assert await both_docs(db_pool, item.id) == (item.doc.decode(),) * 2
        # the JSON is made of the sizes too: another size, another JSON
        await db_pool.execute("UPDATE images SET blob_sizes[2] = 5 WHERE id = $1", item.id)
        changed = item.doc.decode().replace(str(2**63 - 1), "5", 1)  # the first layer
        assert await both_docs(db_pool, item.id) == (changed, changed)
    finally:
        await db_pool.execute("DELETE FROM images WHERE id = $1", item.id)
