"""Page tokens: round trips, the 100-character limit, and every kind of bad token is a 400."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.api.page_tokens import (
    MAX_TOKEN_CHARS,
    VERSION_RETIRED_STORED,
    PageTokenCodec,
    RowCursor,
    pack_key,
    query_fingerprint,
    unpack_key,
)
from mirror.errors import InvalidArgument

SECRET = bytes(range(32))
FP = query_fingerprint("registry:crp123", "", "name asc")
NAME = "crpabcdefghijk0123456/prod/payments/fraud-check-service"
IMAGE_ID = "crp0abcdefghijklmnop"
DIGEST = "sha256:" + "ab" * 32

values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=30),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._/-", max_size=40),
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()),
)


@pytest.fixture
def codec() -> PageTokenCodec:
    return PageTokenCodec(SECRET)


@given(st.lists(values, max_size=4))
def test_any_key_round_trips_or_asks_for_a_row_token(key: list[str | int | None]) -> None:
    codec = PageTokenCodec(SECRET)
    token = codec.encode(FP, key)
    assert unpack_key(pack_key(key)) == tuple(key)
    if token is None:
        return
    assert len(token) <= MAX_TOKEN_CHARS
    assert token.replace("-", "").replace("_", "").isalnum()
    assert codec.decode(token, FP) == tuple(key)


def test_realistic_keys_fit_inline(codec: PageTokenCodec) -> None:
    keys: list[list[str | int | None]] = [
        [IMAGE_ID],
        [NAME, IMAGE_ID],
        [NAME, 1_735_689_600_123_456_789, IMAGE_ID],
        [DIGEST, 1_735_689_600_123_456_789, IMAGE_ID],
    ]
    for key in keys:
        token = codec.encode(FP, key)
        assert token is not None and len(token) <= MAX_TOKEN_CHARS, key
        assert codec.decode(token, FP) == tuple(key)


def test_a_key_too_long_is_not_truncated(codec: PageTokenCodec) -> None:
    assert codec.encode(FP, [NAME, DIGEST, IMAGE_ID]) is None


def test_a_row_token_names_the_last_rows_that_fit(codec: PageTokenCodec) -> None:
    ids = [f"crp{n:017d}" for n in range(10)]
    token = codec.encode_rows(FP, ids)
    assert len(token) <= MAX_TOKEN_CHARS
    decoded = codec.decode(token, FP)
    assert isinstance(decoded, RowCursor)
    # 20-character ids pack to 16 bytes: four fit, the page's last four, in page order
    assert decoded.ids == tuple(ids[-4:])


@given(st.lists(st.text(alphabet="ABCxyz019_-", min_size=1, max_size=50), min_size=1, max_size=8))
def test_any_ids_give_a_row_token_of_their_tail(ids: list[str]) -> None:
    codec = PageTokenCodec(SECRET)
    token = codec.encode_rows(FP, ids)
    assert len(token) <= MAX_TOKEN_CHARS
    decoded = codec.decode(token, FP)
    assert isinstance(decoded, RowCursor)
    assert decoded.ids and decoded.ids == tuple(ids[len(ids) - len(decoded.ids) :])


def test_a_row_token_of_another_listing_is_refused(codec: PageTokenCodec) -> None:
    token = codec.encode_rows(FP, [IMAGE_ID])
    with pytest.raises(InvalidArgument, match="pageToken"):
        codec.decode(token, query_fingerprint("registry:crp123", "", "name desc"))


def test_a_token_of_the_retired_stored_kind_is_expired(codec: PageTokenCodec) -> None:
    body = bytes([VERSION_RETIRED_STORED]) + bytes(16)
    token = base64.urlsafe_b64encode(body + codec._mac(FP, body)).rstrip(b"=").decode()
    with pytest.raises(InvalidArgument, match="invalid pageToken: expired"):
        codec.decode(token, FP)


def test_token_of_another_listing_is_refused(codec: PageTokenCodec) -> None:
    token = codec.encode(FP, [NAME, IMAGE_ID])
    assert token is not None
    other = query_fingerprint("registry:crp123", "", "name desc")
    with pytest.raises(InvalidArgument, match="pageToken"):
        codec.decode(token, other)


def test_token_of_another_secret_is_refused(codec: PageTokenCodec) -> None:
    token = PageTokenCodec(b"another secret of 32 bytes......").encode(FP, [IMAGE_ID])
    assert token is not None
    with pytest.raises(InvalidArgument, match="pageToken"):
        codec.decode(token, FP)


def test_every_single_byte_change_is_refused(codec: PageTokenCodec) -> None:
    token = codec.encode(FP, [NAME, 42, IMAGE_ID])
    assert token is not None
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for i in range(len(raw)):
        for flip in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[i] ^= flip
            text = base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
            with pytest.raises(InvalidArgument):
                codec.decode(text, FP)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "A",
        "%%%not-a-token",
        "A" * 100,
        "A" * 101,
        "ünïcode",
        base64.urlsafe_b64encode(b"junk").decode().rstrip("="),
        base64.urlsafe_b64encode(b"\x09" + b"\x00" * 20).decode().rstrip("="),  # unknown version
    ],
)
def test_forged_tokens_are_invalid_argument(codec: PageTokenCodec, token: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid pageToken"):
        codec.decode(token, FP)


def test_non_canonical_spelling_is_refused(codec: PageTokenCodec) -> None:
    token = codec.encode(FP, [IMAGE_ID])
    assert token is not None
    for variant in (token + "=", token + "!", "\n" + token, token[:-1] + "=" + token[-1]):
        with pytest.raises(InvalidArgument):
            codec.decode(variant, FP)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        PageTokenCodec(b"short")


def test_fingerprint_parts_are_unambiguous() -> None:
    assert query_fingerprint("ab", "c") != query_fingerprint("a", "bc")
