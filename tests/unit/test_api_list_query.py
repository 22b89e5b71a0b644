"""The List SQL: one text per request shape, values only as parameters, keyset branches."""

from __future__ import annotations

import itertools
import re

import orjson
import pytest

from mirror.api.image_list import page_body
from mirror.api.list_query import SELECT_LIST, list_params, list_sql, registries_named, shape_of
from mirror.listing import parse_list_request

SCOPES = [
    {"registryId": "crpregistry"},
    {"folderId": "b1gfolder"},
    {"repositoryName": "crpregistry/team/app"},
]
FILTERS = [
    "",
    'name="crpregistry/a"',
    'name!="crpregistry/a"',
    'name IN ("crpregistry/a", "crpregistry/b")',
    'name NOT IN ("crpregistry/a")',
]
ORDERS = [
    "",
    "name",
    "name desc",
    "digest desc",
    "created_at",
    "name desc, created_at",
    "created_at desc, digest, name",
]


def _cursor(order_by: str) -> list[str | int]:
    request = parse_list_request({"registryId": "r", "orderBy": order_by})
    return [7 if key.field.value == "created_at" else "v" for key in request.order] + ["crpid"]


@pytest.mark.parametrize(
    ("scope", "filter_text", "order_by", "after"),
    list(itertools.product(SCOPES, FILTERS, ORDERS, [False, True])),
)
def test_parameters_match_the_sql(
    scope: dict[str, str], filter_text: str, order_by: str, after: bool
) -> None:
    query = dict(scope, filter=filter_text, orderBy=order_by)
    request = parse_list_request(query)
    sql = list_sql(shape_of(request, after_cursor=after))
    numbers = dict.fromkeys(registries_named(request), 3)
    params = list_params(request, _cursor(order_by) if after else None, 101, numbers)
    placeholders = {int(n) for n in re.findall(r"\$(\d+)", sql)}
    assert placeholders == set(range(1, len(params) + 1))
    assert params[-1] == 101
    # values never reach the SQL text
    assert "crpregistry" not in sql and "b1gfolder" not in sql and "crpid" not in sql
    if after:
        # one keyset branch per sort key, and one for the cursor's own tie group (by id)
        assert sql.count(f"SELECT {SELECT_LIST} FROM images") == len(request.order) + 1


def test_repository_scope_uses_the_registry_of_its_name() -> None:
    request = parse_list_request({"repositoryName": "crpregistry/team/app"})
    assert registries_named(request) == ["crpregistry"]
    assert list_params(request, None, 11, {"crpregistry": 4}) == [4, "crpregistry/team/app", 11]


def test_a_filter_names_its_repositories_registries() -> None:
    """Each wanted repository's registry number goes beside its name (None: never indexed)."""
    request = parse_list_request(
        {"registryId": "crpa", "filter": 'name IN ("crpa/x", "crpb/y", "crpa/x")'}
    )
    assert sorted(set(registries_named(request))) == ["crpa", "crpb"]
    params = list_params(request, None, 5, {"crpa": 1})
    assert params == [1, ["crpa/x", "crpb/y"], [1, None], 5]


def test_shapes_share_their_sql() -> None:
    a = parse_list_request({"registryId": "a", "orderBy": "name"})
    b = parse_list_request({"registryId": "b", "orderBy": "name", "pageSize": "7"})
    assert list_sql(shape_of(a, after_cursor=True)) is list_sql(shape_of(b, after_cursor=True))


@pytest.mark.parametrize(
    ("docs", "token"),
    [
        ([], ""),
        ([], "tok"),
        ([b'{"id":"a"}'], ""),
        ([b'{"id":"a"}', '{"id":"b","tags":["ü"]}'.encode()], "t-_0"),
    ],
)
def test_page_body_is_what_the_upstream_writes(docs: list[bytes], token: str) -> None:
    expected: dict[str, object] = {}
    if docs:
        expected["images"] = [orjson.loads(d) for d in docs]
    if token:
        expected["nextPageToken"] = token
    assert page_body(docs, token) == orjson.dumps(expected)


def test_cursor_ties_are_equalities_in_every_scope() -> None:
    # A prepared statement runs a generic plan, where a closed range on a parameter is
    # estimated at a fraction of the scope and the tie branch skip-scanned another index
    # (test_list_plans.py, with real generic plans, failed on it).
    for query in (
        {"registryId": "r", "orderBy": "name, created_at"},
        {"registryId": "r", "orderBy": "name desc, created_at"},
        {"folderId": "f", "orderBy": "name desc, created_at"},
    ):
        sql = list_sql(shape_of(parse_list_request(query), after_cursor=True))
        assert "name = $2 AND created_ns = $3 AND id > $4" in sql
        assert "name >= $2" not in sql
        assert "created_ns >= $3" not in sql


@pytest.mark.parametrize(
    ("order_by", "by_repository"),
    [
        ("", False),
        ("name", False),  # (registry_id, name, id) forward
        ("name desc", True),  # backward gives id DESC within a repository
        ("name, digest", False),
        ("name desc, digest desc", False),  # backward; only digest ties meet id ASC
        ("name, digest desc", True),
        ("name desc, created_at", True),
        ("name, created_at desc, digest", True),
        ("digest, name desc", False),  # not led by name: a digest group is tiny
        ("created_at desc", False),
    ],
)
def test_name_led_orders_against_the_index_walk_the_repositories(
    order_by: str, by_repository: bool
) -> None:
    """Which orders read a registry one repository at a time (``WITH RECURSIVE names``), in
    a registry and a folder scope, first page and after a cursor; a repository scope and a
    filter that names the repositories never need it (their name is fixed)."""
    for scope in SCOPES:
        for filter_text in ("", 'name IN ("crpregistry/a")'):
            query = {**scope, **({"orderBy": order_by} if order_by else {})}
            if filter_text:
                query["filter"] = filter_text
            request = parse_list_request(query)
            expected = by_repository and "repositoryName" not in scope and not filter_text
            for after in (False, True):
                sql = list_sql(shape_of(request, after_cursor=after))
                assert ("WITH RECURSIVE names" in sql) == expected, (query, after)
