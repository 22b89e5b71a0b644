"""The List request contract (mirror/listing.py): validation, precedence, filter, order."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import InvalidArgument
from mirror.listing import (
    DEFAULT_PAGE_SIZE,
    Descending,
    FilterOp,
    ListRequest,
    NameFilter,
    SortField,
    SortKey,
    created_at_ns,
    image_sort_key,
    matches,
    parse_filter,
    parse_int64,
    parse_list_request,
    parse_order_by,
    parse_page_size,
    validate_resource_id,
)
from mirror.model import Scope, ScopeKind

REG = "crpabcdefghij0123456"
REPO = f"{REG}/team/api"
FOLDER = "b1gabcdefghij0123456"


# -- scope ------------------------------------------------------------------------------

SCOPES = [
    ("folder", {"folderId": FOLDER}, Scope(ScopeKind.FOLDER, FOLDER)),
    ("registry", {"registryId": REG}, Scope(ScopeKind.REGISTRY, REG)),
    ("repository", {"repositoryName": REPO}, Scope(ScopeKind.REPOSITORY, REPO)),
    ("repository beats registry", {"repositoryName": REPO, "registryId": "other"}, Scope(ScopeKind.REPOSITORY, REPO)),
    ("repository beats folder", {"repositoryName": REPO, "folderId": FOLDER}, Scope(ScopeKind.REPOSITORY, REPO)),
    ("registry beats folder", {"registryId": REG, "folderId": "other"}, Scope(ScopeKind.REGISTRY, REG)),
    ("all three", {"folderId": FOLDER, "registryId": REG, "repositoryName": REPO}, Scope(ScopeKind.REPOSITORY, REPO)),
    ("empty values are absent", {"repositoryName": "", "registryId": "", "folderId": FOLDER}, Scope(ScopeKind.FOLDER, FOLDER)),
    ("id of 50 characters", {"registryId": "r" * 50}, Scope(ScopeKind.REGISTRY, "r" * 50)),
    ("repository without registry prefix", {"repositoryName": "ubuntu"}, Scope(ScopeKind.REPOSITORY, "ubuntu")),
]  # fmt: skip


@pytest.mark.parametrize(("query", "scope"), [c[1:] for c in SCOPES], ids=[c[0] for c in SCOPES])
def test_scope_precedence(query: dict[str, str], scope: Scope) -> None:
    assert parse_list_request(query).scope == scope


def test_defaults() -> None:
    request = parse_list_request({"folderId": FOLDER})
    assert request == ListRequest(Scope(ScopeKind.FOLDER, FOLDER), DEFAULT_PAGE_SIZE, "", None, ())


def test_takes_query_pairs_and_ignores_unknown_parameters() -> None:
    request = parse_list_request([("folderId", FOLDER), ("pageSize", "7"), ("view", "FULL")])
    assert request.page_size == 7


# -- every invalid request, with the parameter named in the message ------------------------

INVALID: list[tuple[str, Any, str]] = [
    ("no scope", {}, "one of repositoryName, registryId or folderId is required"),
    ("only empty scopes", {"registryId": "", "folderId": ""}, "required"),
    ("registryId too long", {"registryId": "r" * 51}, "invalid registryId: longer than 50"),
    ("folderId too long", {"folderId": "f" * 51}, "invalid folderId: longer than 50"),
    ("ignored registryId still validated", {"repositoryName": REPO, "registryId": "r" * 51}, "invalid registryId"),
    ("ignored folderId still validated", {"registryId": REG, "folderId": "f" * 51}, "invalid folderId"),
    ("repositoryName upper case", {"repositoryName": f"{REG}/Team"}, "invalid repositoryName"),
    ("repositoryName double slash", {"repositoryName": f"{REG}//api"}, "invalid repositoryName"),
    ("repositoryName trailing slash", {"repositoryName": f"{REG}/api/"}, "invalid repositoryName"),
    ("repositoryName leading separator", {"repositoryName": "-api"}, "invalid repositoryName"),
    ("repositoryName double separator", {"repositoryName": "a..b"}, "invalid repositoryName"),
    ("repositoryName space", {"repositoryName": "a b"}, "invalid repositoryName"),
    ("pageSize negative", {"folderId": FOLDER, "pageSize": "-1"}, "invalid pageSize: must not be negative"),
    ("pageSize over max", {"folderId": FOLDER, "pageSize": "1001"}, "invalid pageSize: must be at most 1000"),
    ("pageSize not a number", {"folderId": FOLDER, "pageSize": "ten"}, "invalid pageSize: \"ten\" is not an integer"),
    ("pageSize fraction", {"folderId": FOLDER, "pageSize": "1.5"}, "invalid pageSize"),
    ("pageSize hex", {"folderId": FOLDER, "pageSize": "0x10"}, "invalid pageSize"),
    ("pageSize spaces", {"folderId": FOLDER, "pageSize": " 5"}, "invalid pageSize"),
    ("pageSize underscore", {"folderId": FOLDER, "pageSize": "1_0"}, "invalid pageSize"),
    ("pageSize beyond int64", {"folderId": FOLDER, "pageSize": "9" * 20}, "int64"),
    ("pageToken too long", {"folderId": FOLDER, "pageToken": "t" * 101}, "invalid pageToken: longer than 100"),
    ("parameter given twice", [("folderId", FOLDER), ("pageSize", "1"), ("pageSize", "2")], "invalid pageSize: given more than once"),
    ("filter too long", {"folderId": FOLDER, "filter": " " * 1001}, "invalid filter: longer than 1000"),
    ("filter bad", {"folderId": FOLDER, "filter": "name"}, "invalid filter"),
    ("orderBy too long", {"folderId": FOLDER, "orderBy": " " * 101}, "invalid orderBy: longer than 100"),
    ("orderBy bad", {"folderId": FOLDER, "orderBy": "size"}, "invalid orderBy"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_requests(query: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_list_request(query)
    assert message in caught.value.message
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", 100),
        ("0", 100),
        ("1", 1),
        ("100", 100),
        ("1000", 1000),
        ("+5", 5),
        ("007", 7),
        ("-0", 100),
    ],
)
def test_page_size(text: str, size: int) -> None:
    assert parse_list_request({"folderId": FOLDER, "pageSize": text}).page_size == size


def test_page_token_of_100_characters_is_fine() -> None:
    assert parse_list_request({"folderId": FOLDER, "pageToken": "t" * 100}).page_token == "t" * 100


def test_resource_ids() -> None:
    assert validate_resource_id("imageId", "crp" + "a" * 47) == "crp" + "a" * 47
    with pytest.raises(InvalidArgument, match="invalid imageId: longer than 50"):
        validate_resource_id("imageId", "x" * 51)
    with pytest.raises(InvalidArgument, match="invalid operationId: required"):
        validate_resource_id("operationId", "")


# -- filter --------------------------------------------------------------------------------

VALID_FILTERS = [
    (f'name="{REPO}"', NameFilter(FilterOp.EQ, (REPO,))),
    (f'  name = "{REPO}"  ', NameFilter(FilterOp.EQ, (REPO,))),
    (f'name!="{REPO}"', NameFilter(FilterOp.NE, (REPO,))),
    (f'name != "{REPO}"', NameFilter(FilterOp.NE, (REPO,))),
    ('name IN ("a", "b/c")', NameFilter(FilterOp.IN, ("a", "b/c"))),
    ('name in("a","b")', NameFilter(FilterOp.IN, ("a", "b"))),
    ('name NOT IN ("a")', NameFilter(FilterOp.NOT_IN, ("a",))),
    ('name not   in ( "a" , "b" )', NameFilter(FilterOp.NOT_IN, ("a", "b"))),
    (f'name="{"a" * 256}"', NameFilter(FilterOp.EQ, ("a" * 256,))),
    ("", None),
    ("   ", None),
]


@pytest.mark.parametrize(("text", "expected"), VALID_FILTERS)
def test_valid_filters(text: str, expected: NameFilter | None) -> None:
    assert parse_filter(text) == expected


INVALID_FILTERS = [
    ("name", "expected an operator"),
    ('digest="a"', "unknown field 'digest'"),
    ('tags="a"', "only 'name' can be filtered on"),
    ('"a"', "expected a field name"),
    ('name=="a"', "expected a double-quoted value"),
    ("name=a", "expected a double-quoted value"),
    ("name='a'", "unexpected character"),
    ('name="a', "unterminated string"),
    ('name="a" AND name="b"', "one condition only"),
    ('name="a" extra', "one condition only"),
    ('name IN ()', "expected a double-quoted value"),
    ('name IN "a"', "expected '(' opening"),
    ('name IN ("a",)', "expected a double-quoted value"),
    ('name IN ("a" "b")', "expected ',' or ')'"),
    ('name IN ("a"', "expected ',' or ')'"),
    ('name NOT ("a")', "expected IN after NOT"),
    ('name NOTIN ("a")', "expected an operator"),
    ('name="Upper"', "does not match"),
    ('name=""', "does not match"),
    ('name="a//b"', "does not match"),
    ('name IN ("ok", "Bad")', "does not match"),
    (f'name="{"a" * 257}"', "longer than 256"),
    ('name < "a"', "unexpected character"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), INVALID_FILTERS)
def test_invalid_filters(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert caught.value.message.startswith("invalid filter: ")
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("name_filter", "name", "expected"),
    [
        (None, "x", True),
        (NameFilter(FilterOp.EQ, ("a",)), "a", True),
        (NameFilter(FilterOp.EQ, ("a",)), "ab", False),
        (NameFilter(FilterOp.NE, ("a",)), "a", False),
        (NameFilter(FilterOp.NE, ("a",)), "b", True),
        (NameFilter(FilterOp.IN, ("a", "b")), "b", True),
        (NameFilter(FilterOp.IN, ("a", "b")), "c", False),
        (NameFilter(FilterOp.NOT_IN, ("a", "b")), "b", False),
        (NameFilter(FilterOp.NOT_IN, ("a", "b")), "c", True),
    ],
)
def test_matches(name_filter: NameFilter | None, name: str, expected: bool) -> None:
    assert matches(name_filter, name) is expected


_segment = st.from_regex(r"[a-z0-9]{1,4}([._-][a-z0-9]{1,3}){0,2}", fullmatch=True)
_names = st.lists(_segment, min_size=1, max_size=3).map("/".join)


@given(
    st.sampled_from(list(FilterOp)),
    st.lists(_names, min_size=1, max_size=4),
)
def test_filter_text_round_trips(op: FilterOp, values: list[str]) -> None:
    if op in (FilterOp.EQ, FilterOp.NE):
        values = values[:1]
    name_filter = NameFilter(op, tuple(values))
    assert parse_filter(str(name_filter)) == name_filter


# -- orderBy ----------------------------------------------------------------------------------

N, D, C = SortField.NAME, SortField.DIGEST, SortField.CREATED_AT

VALID_ORDERS = [
    ("", ()),
    ("  ", ()),
    ("name", (SortKey(N),)),
    ("name asc", (SortKey(N),)),
    ("name desc", (SortKey(N, True),)),
    ("name DESC", (SortKey(N, True),)),
    ("created_at desc, name", (SortKey(C, True), SortKey(N))),
    ("digest,created_at asc", (SortKey(D), SortKey(C))),
    (" name  desc ,  digest desc , created_at ", (SortKey(N, True), SortKey(D, True), SortKey(C))),
]


@pytest.mark.parametrize(("text", "expected"), VALID_ORDERS)
def test_valid_order_by(text: str, expected: tuple[SortKey, ...]) -> None:
    assert parse_order_by(text) == expected


INVALID_ORDERS = [
    ("id", "unknown field \"id\" (allowed: name, digest, created_at)"),
    ("createdAt", "unknown field \"createdAt\""),
    ("Name", "unknown field"),
    ("name up", "unknown direction \"up\""),
    ("name desc asc", "is not 'field' or 'field asc|desc'"),
    ("name, name desc", "field name given more than once"),
    ("name,", "empty item"),
    (",name", "empty item"),
    ("name,,digest", "empty item"),
    ("name;digest", "unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), INVALID_ORDERS)
def test_invalid_order_by(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_order_by(text)
    assert caught.value.message.startswith("invalid orderBy: ")
    assert message in caught.value.message


# -- the order ----------------------------------------------------------------------------------


def _image(image_id: str, name: str, digest: str, created: str) -> dict[str, str]:
    return {"id": image_id, "name": name, "digest": digest, "createdAt": created}


IMAGES = [
    _image("crp3", "r/b", "sha256:02", "2024-01-01T00:00:00Z"),
    _image("crp1", "r/a", "sha256:03", "2024-01-01T00:00:00.5Z"),
    _image("crp2", "r/b", "sha256:01", "2023-12-31T23:59:59.999999999Z"),
    _image("crp4", "r/a", "sha256:04", "2024-01-01T00:00:00.000001Z"),
    _image("crp0", "r/c", "sha256:00", "2024-01-01T00:00:00Z"),
]


@pytest.mark.parametrize(
    ("order_by", "ids"),
    [
        ("", ["crp0", "crp1", "crp2", "crp3", "crp4"]),
        ("name", ["crp1", "crp4", "crp2", "crp3", "crp0"]),
        ("name desc", ["crp0", "crp2", "crp3", "crp1", "crp4"]),  # ties stay id ascending
        ("digest desc", ["crp4", "crp1", "crp3", "crp2", "crp0"]),
        ("created_at", ["crp2", "crp0", "crp3", "crp4", "crp1"]),  # numeric, not textual
        ("created_at desc", ["crp1", "crp4", "crp0", "crp3", "crp2"]),
        ("name desc, created_at desc", ["crp0", "crp3", "crp2", "crp1", "crp4"]),
    ],
)
def test_image_sort_key(order_by: str, ids: list[str]) -> None:
    ordered = sorted(IMAGES, key=image_sort_key(parse_order_by(order_by)))
    assert [image["id"] for image in ordered] == ids


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("2024-01-01T00:00:00.000000001Z", 1_704_067_200_000_000_001),
        ("2024-01-01T03:00:00+03:00", 1_704_067_200_000_000_000),
        ("2024-01-01t00:00:00.123z", 1_704_067_200_123_000_000),
    ],
)
def test_created_at_ns(text: str, ns: int) -> None:
    assert created_at_ns(text) == ns


@pytest.mark.parametrize("text", ["2024-01-01", "2024-01-01T00:00:00", "2024-01-01 00:00:00Z", "x"])
def test_created_at_ns_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        created_at_ns(text)


def test_descending_reverses_comparison() -> None:
    assert Descending("b") < Descending("a")
    assert not Descending("a") < Descending("a")
    assert Descending("a") == Descending("a")
    assert sorted([Descending(x) for x in "abc"]) == [Descending(x) for x in "cba"]


def test_query_key_binds_scope_filter_and_order_only() -> None:
    base = parse_list_request({"folderId": FOLDER, "pageSize": "5"})
    same = parse_list_request({"folderId": FOLDER, "pageSize": "50", "pageToken": "x"})
    assert base.query_key == same.query_key
    for other in (
        {"registryId": FOLDER},
        {"folderId": FOLDER, "filter": 'name="a"'},
        {"folderId": FOLDER, "orderBy": "name"},
        {"folderId": FOLDER, "orderBy": "name desc"},
    ):
        assert parse_list_request(other).query_key != base.query_key


_any_text = st.text(st.characters(codec="utf-8"), max_size=120) | st.sampled_from(
    [
        'name="a"',
        'name IN ("a", "b")',
        "name desc, digest",
        "1000",
        "-1",
        "",
        " ",
        "\x00",
        '"',
        "(",
        ")",
    ]
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "registryId",
                "repositoryName",
                "folderId",
                "pageSize",
                "pageToken",
                "filter",
                "orderBy",
            ]
        ),
        _any_text,
    )
)
def test_any_query_is_a_request_or_invalid_argument(query: dict[str, str]) -> None:
    try:
        request = parse_list_request(query)
    except InvalidArgument as exc:
        assert exc.message.startswith(("invalid ", "one of "))
    else:
        assert 1 <= request.page_size <= 1000
        assert request.scope.id in query.values()


@pytest.mark.parametrize(
    "value",
    ["crp\x00", "..", ".", "a/b", "a b", "crp\n", "é", "crp%00", "\u2028", "a\tb"],
)
def test_ids_outside_the_cloud_alphabet_are_invalid(value: str) -> None:
    with pytest.raises(InvalidArgument, match="is not an id"):
        validate_resource_id("imageId", value)
    with pytest.raises(InvalidArgument, match="invalid folderId"):
        parse_list_request({"folderId": value})


def test_ids_of_the_cloud_alphabet_are_fine() -> None:
    for value in ("crp0abcdefghijklmnop", "b1g-A_z", "not-an-id", "x" * 50):
        assert validate_resource_id("imageId", value) == value


@pytest.mark.parametrize(
    ("text", "size"),
    [("0" * 5000 + "7", 7), ("+" + "0" * 30 + "1000", 1000), ("-" + "0" * 40, 100)],
)
def test_page_size_with_any_number_of_leading_zeros(text: str, size: int) -> None:
    assert parse_page_size(text) == size


@pytest.mark.parametrize("text", ["9" * 4301, "9" * 100_000, "-" + "1" * 5000, "9" * 20])
def test_a_number_too_long_for_int64_is_out_of_range_unconverted(text: str) -> None:
    with pytest.raises(InvalidArgument, match="out of the int64 range"):
        parse_page_size(text)
    with pytest.raises(InvalidArgument, match="out of the int64 range"):
        parse_int64("limit", text)


def test_values_in_messages_are_escaped() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_list_request({"folderId": "b1g", "repositoryName": "a\nINFO forged"})
    assert "\n" not in caught.value.message and "a\\nINFO forged" in caught.value.message
