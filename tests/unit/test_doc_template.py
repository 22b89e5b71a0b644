"""An image's JSON as a template without the digests its row holds (mirror/model.py).

Pure logic: the template fills back to the doc for any text, digest and keys. That
PostgreSQL's format() (``image_doc``, sql/104) fills it the same way is checked
against the real server in tests/integration/test_doc_template_sql.py.
"""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from mirror.model import (
    DOC_TEMPLATE_FRAGMENTS,
    blob_object,
    digest_key,
    doc_template,
    doc_template_values,
    image_template,
    render_doc_template,
)

HEX = "0123456789abcdef"
hex64 = st.text(HEX, min_size=64, max_size=64)
# Text that mixes the values, their pieces, and what a placeholder is made of.
pieces = st.one_of(
    st.text(HEX, min_size=1, max_size=70),
    st.sampled_from(["%", "%%", "$", "s", "%1$s", "%12$s", "1$s", "sha256:", '"', "é", "\\u0025"]),
    st.sampled_from(DOC_TEMPLATE_FRAGMENTS),
    st.sampled_from(
        [f[:-1] for f in DOC_TEMPLATE_FRAGMENTS] + [f[1:] for f in DOC_TEMPLATE_FRAGMENTS]
    ),
    st.text(string.printable, max_size=8),
)


@given(
    digest=st.one_of(hex64.map(lambda h: "sha256:" + h), st.text(max_size=80)),
    hexes=st.lists(hex64, max_size=12),
    parts=st.lists(pieces, max_size=30),
    data=st.data(),
)
def test_a_template_fills_back_to_its_doc(
    digest: str, hexes: list[str], parts: list[str], data: st.DataObject
) -> None:
    keys = [bytes.fromhex(h) for h in hexes]
    # the digests as the doc spells them, at random places, some twice, some adjacent
    for value in [digest, *("sha256:" + h for h in hexes), *data.draw(st.lists(hex64, max_size=3))]:
        parts.insert(data.draw(st.integers(0, len(parts))), value)
    doc = "".join(parts)
    template = doc_template(doc, digest, keys)
    assert render_doc_template(template, doc_template_values(digest, keys)) == doc


@given(doc=st.text(max_size=200), digest=st.text(max_size=80))
def test_without_keys_or_fragments_only_percent_signs_change(doc: str, digest: str) -> None:
    template = doc_template(doc, digest, [])
    if not any(f in doc for f in DOC_TEMPLATE_FRAGMENTS) and digest[7:] not in doc:
        assert template == doc.replace("%", "%%")
    assert render_doc_template(template, doc_template_values(digest, [])) == doc


def test_an_image_keeps_its_digests_in_its_columns_only() -> None:
    image, config, layer = "ab" * 32, "0c" * 32, "12" * 32
    doc = (
        f'{{"id":"crp1","digest":"sha256:{image}","config":{{"digest":"sha256:{config}"}},'
        f'"layers":[{{"digest":"sha256:{layer}"}},{{"digest":"sha256:{layer}"}}],'
        f'"tags":["{layer}","50%"]}}'
    )
    keys = [digest_key(f"sha256:{d}") for d in (config, layer, layer)]
    values = doc_template_values(f"sha256:{image}", keys)
    assert values == [*DOC_TEMPLATE_FRAGMENTS, image, config, layer, layer]
    template = doc_template(doc, f"sha256:{image}", keys)
    # a digest's hex where no "sha256:" names it (the tag) stays: only compactness is lost
    assert template == (
        '{"id":"crp1%1$s%4$s","config":{"digest":"sha256:%5$s"},'
        f'"layers":[{{"digest":"sha256:%6$s"}},{{"digest":"sha256:%6$s"}}],"tags":["{layer}","50%%"]}}'
    )
    assert render_doc_template(template, values) == doc
    # a digest of another algorithm is stored as its text, not 32 bytes: it stays in the doc
    sha512 = '{"digest":"sha512:' + "ee" * 64 + '"}'
    assert doc_template(sha512, "", [digest_key("sha512:" + "ee" * 64)]) == sha512


# Blob ids as they come: the cloud's, and ones a blob object could not be split or
# found back by (a space, "%", empty, a quote the JSON escapes).
_cloud_id = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20)
blob_id = st.one_of(
    _cloud_id, _cloud_id, _cloud_id, st.sampled_from(["a b", "5%", "", '"', "é", "%1$s"])
)


text_or_piece = st.one_of(st.text(max_size=12), pieces)


@given(
    digest=st.one_of(hex64.map(lambda h: "sha256:" + h), st.text(max_size=80)),
    blobs=st.lists(
        st.tuples(blob_id, hex64 | st.text(HEX, max_size=6), st.integers(-1, 2**63 - 1)),
        max_size=8,
    ),
    parts=st.lists(pieces, max_size=20),
    data=st.data(),
)
def test_a_template_of_either_kind_fills_back_to_its_doc(
    digest: str, blobs: list[tuple[str, str, int]], parts: list[str], data: st.DataObject
) -> None:
    ids = [b[0] for b in blobs]
    keys = [digest_key("sha256:" + b[1]) for b in blobs]
    sizes = [b[2] for b in blobs]
    # the blobs' objects in their order, each after a random piece (one sometimes left out,
    # some a second time anywhere), and pieces of them anywhere
    ordered: list[str] = []
    for i, k, n in zip(ids, keys, sizes, strict=True):
        obj = blob_object(i, k, n)
        if data.draw(st.integers(0, 9)):
            ordered += (data.draw(st.sampled_from(["", ",", "x", *parts[:1]])), obj)
        if not data.draw(st.integers(0, 4)):
            parts.insert(data.draw(st.integers(0, len(parts))), obj)
        parts.insert(data.draw(st.integers(0, len(parts))), obj[: data.draw(st.integers(0, 40))])
    at = data.draw(st.integers(0, len(parts)))
    parts[at:at] = ordered
    parts.insert(data.draw(st.integers(0, len(parts))), digest)
    name = data.draw(text_or_piece)
    parts.insert(data.draw(st.integers(0, len(parts))), f'"name":"{name}"')
    image_id = data.draw(text_or_piece)
    if data.draw(st.booleans()):
        parts.insert(0, f'{{"id":"{image_id}"')
    doc = "".join(parts)
    template, stored_ids = image_template(doc, digest, keys, sizes, ids, image_id, name)
    values = doc_template_values(digest, keys, sizes, stored_ids, image_id, name)
    assert render_doc_template(template, values) == doc
    if stored_ids is not None:  # the second kind: every object stands as its placeholder
        assert stored_ids.split(" ") == ids
        assert all(f"%{7 + n}$s" in template for n in range(len(ids)))


def test_the_fragments_of_stored_templates_never_change() -> None:
    # every template stored since sql/104 refers to them by position
    assert DOC_TEMPLATE_FRAGMENTS == ('","digest":"sha256:', '"},{"id":"', '","size":"')
