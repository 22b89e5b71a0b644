"""Every List shape reads an index in the page's order: no sort of the whole scope.

10,000 simulator images (COPY, bench/api_dataset.py), analyzed; for each scope kind
(registry, folder, repository) x the four orders of the load mix x first page and a
page after a cursor from the middle of the scope, the page's SQL
(mirror.api.list_query) is EXPLAINed, with the custom plan and with the generic plan
that a prepared statement switches to after five runs. A plan passes when every
``Sort`` node (an ``Incremental Sort`` over an index's groups is fine) reads only
``LIMIT``-bounded inputs (the merge of per-registry or per-branch pages) and every
read of ``images`` is an index scan. The index each shape uses is the table in
docs/INDEXES.md.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from bench.api_dataset import load_registry
from mirror.api.image_list import fetch_generic
from mirror.api.list_query import (
    RegistryNumbers,
    generic_plan,
    list_params,
    list_sql,
    registries_named,
    shape_of,
    sort_values,
)
from mirror.listing import ListRequest, parse_list_request
from tests.postgres_fixture import dsn_with_database, new_database_name

IMAGES = 10_000
LIMIT = 100
# The four orders of the load mix (bench/load_bench.py ORDERS): default, one key
# descending, name then a descending key, name descending then an ascending key.
ORDERS = ("", "created_at desc", "name, digest desc", "name desc, created_at")
SCANS = {"Index Scan", "Index Only Scan"}
# The columns that are one value throughout a scope (a query parameter's scope).
CONSTANT = {
    "registryId": frozenset({"registry"}),
    "folderId": frozenset({"folder_id", "registry"}),  # registry: one per merged scan
    "repositoryName": frozenset({"registry", "name"}),
}


@pytest.fixture(scope="module")
async def listing_db(postgres_dsn: str, template_database: str) -> AsyncIterator[str]:
    name = new_database_name("plans")
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    dsn = dsn_with_database(postgres_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await load_registry(conn, images=IMAGES, seed=7, workers=1, progress=False)
    finally:
        await conn.close()
    yield dsn
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _scopes(conn: asyncpg.Connection) -> dict[str, str]:
    """The biggest registry, folder and repository: the most a page could sort."""
    registry = await conn.fetchval(
        "SELECT split_part(name, '/', 1) FROM images GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )
    folder = await conn.fetchval(
        "SELECT folder_id FROM images GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )
    repository = await conn.fetchval(
        "SELECT name FROM images GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )
    return {"registryId": registry, "folderId": folder, "repositoryName": repository}


async def _params(
    conn: asyncpg.Connection, request: ListRequest, cursor: Any, limit: int
) -> list[Any]:
    """``list_params`` with the numbers of the registries the request names (sql/120)."""
    numbers = await RegistryNumbers().of(conn, registries_named(request))
    return list_params(request, cursor, limit, numbers)


def _request(scope: str, value: str, order: str) -> ListRequest:
    query = {scope: value, "pageSize": str(LIMIT)}
    if order:
        query["orderBy"] = order
    return parse_list_request(query)


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [node]
    for child in node.get("Plans", []):
        nodes += _walk(child)
    return nodes


def _unbounded_reads(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The reads of ``images`` reachable from ``node`` without passing a Limit."""
    if node["Node Type"] == "Limit":
        return []
    own = [node] if node.get("Relation Name") == "images" else []
    return own + [r for child in node.get("Plans", []) for r in _unbounded_reads(child)]


def _one_repository(read: dict[str, Any]) -> bool:
    """Whether a read is bounded to one repository's rows (``name = ...`` in its index condition)."""
    condition = read.get("Index Cond", "") + read.get("Recheck Cond", "")
    return "(name = " in condition


def _equal_columns(read: dict[str, Any]) -> set[str]:
    """The columns a read's conditions hold equal to one value (``(col = ...``)."""
    text = " ".join(read.get(k, "") for k in ("Index Cond", "Recheck Cond", "Filter"))
    return set(re.findall(r"\((\w+) = ", text))


def _column(key: str) -> str:
    """``images_1.name COLLATE "C" DESC`` -> ``name``."""
    return key.split()[0].rsplit(".", 1)[-1]


def plan_problems(
    plan: dict[str, Any], constant: frozenset[str] = frozenset({"registry", "folder_id"})
) -> tuple[list[str], list[str]]:
    """What makes a page plan more than an index-ordered read, and the tolerated sorts.

    Tolerated: a Sort of rows read from one repository (the cursor's own tie group
    after a cursor: the planner takes a bitmap scan of the group's rest and a top-N
    sort when it estimates the group small). Anything else that sorts an unbounded
    read, or reads images without an index scan, is a problem; so is an
    Incremental Sort whose presorted keys are only columns ``constant`` in the
    scope (its one group is the whole scope).
    """
    problems, tolerated = [], []
    for node in _walk(plan):
        reads = _unbounded_reads(node) if node["Node Type"] == "Incremental Sort" else []
        # its groups are the scope, unless each read is one tie group of a sort key
        if reads and {_column(k) for k in node["Presorted Key"]} <= constant:
            if not all(_equal_columns(r) - constant for r in reads):
                problems.append(f"an Incremental Sort of the whole scope (keys {node['Sort Key']})")
        reads = _unbounded_reads(node) if node["Node Type"] == "Sort" else []
        if reads and all(_one_repository(r) for r in reads):
            tolerated.append(f"a Sort of one repository's rows (keys {node['Sort Key']})")
        elif reads:
            problems.append(f"a Sort over an unbounded read of images (keys {node['Sort Key']})")
        if (
            node.get("Relation Name") == "images"
            and node["Node Type"] not in SCANS
            and not (node["Node Type"] == "Bitmap Heap Scan" and _one_repository(node))
        ):
            problems.append(f"{node['Node Type']} on images")
    return problems, tolerated


def indexes_used(plan: dict[str, Any]) -> list[str]:
    found = []
    for node in _walk(plan):
        if node.get("Relation Name") == "images" and node.get("Index Name"):
            name = node["Index Name"] + (
                " (backward)" if node["Scan Direction"] == "Backward" else ""
            )
            if name not in found:
                found.append(name)
    return found


def _literal(value: Any) -> str:
    """A parameter as SQL text (test data only: ids, names, digest keys, integers)."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::bytea"
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::text[]"
    return "'" + str(value).replace("'", "''") + "'"


async def _explain(
    conn: asyncpg.Connection,
    sql: str,
    params: list[Any],
    mode: str = "force_custom_plan",
    *,
    analyze: bool = False,
) -> dict[str, Any]:
    """The plan a prepared statement runs in ``mode``.

    ``EXPLAIN`` of the statement with bound parameters would plan it with their values
    whatever ``plan_cache_mode`` says: only a prepared statement's ``EXECUTE`` shows
    its generic plan, the one the server runs once ``auto`` prefers it.
    """
    name = f"plan_{abs(hash((sql, mode)))}"
    await conn.execute(f"SET plan_cache_mode = {mode}")
    await conn.execute(f"PREPARE {name} AS {sql}")
    try:
        args = ", ".join(_literal(v) for v in params)
        options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
        text = await conn.fetchval(f"EXPLAIN ({options}) EXECUTE {name}({args})")
    finally:
        await conn.execute(f"DEALLOCATE {name}")
    return dict(orjson.loads(text)[0]["Plan"])


async def shape_plans(conn: asyncpg.Connection) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """(scope, order, page, plan mode, plan) for every shape checked here."""
    out = []
    for scope, value in (await _scopes(conn)).items():
        for order in ORDERS:
            request = _request(scope, value, order)
            first_sql = list_sql(shape_of(request, after_cursor=False))
            # the cursor: the row in the middle of the scope, in the page's order
            total = await conn.fetchval(
                f"SELECT count(*) FROM ({first_sql}) AS page",
                *await _params(conn, request, None, 10**9),
            )
            rows = await conn.fetch(first_sql, *await _params(conn, request, None, total // 2 + 1))
            cursor = sort_values(request.order, rows[-1])
            deep_sql = list_sql(shape_of(request, after_cursor=True))
            for mode in ("force_custom_plan", "force_generic_plan"):
                first = await _explain(
                    conn, first_sql, await _params(conn, request, None, LIMIT), mode
                )
                deep = await _explain(
                    conn, deep_sql, await _params(conn, request, cursor, LIMIT), mode
                )
                out.append((scope, order or "(id)", "first", mode, first))
                out.append((scope, order or "(id)", "deep", mode, deep))
    await conn.execute("RESET plan_cache_mode")
    return out


def test_a_sort_over_a_whole_scan_is_caught() -> None:
    """The check itself: a full Sort over a sequential scan fails, a top-N merge does not."""
    full = {
        "Node Type": "Limit",
        "Plans": [{"Node Type": "Sort", "Sort Key": ["id"], "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "images"}]}],
    }  # fmt: skip
    merged = {
        "Node Type": "Sort", "Sort Key": ["name"], "Plans": [
            {"Node Type": "Nested Loop", "Plans": [
                {"Node Type": "CTE Scan"},
                {"Node Type": "Limit", "Plans": [
                    {"Node Type": "Index Scan", "Relation Name": "images",
                     "Index Name": "i", "Scan Direction": "Forward"}]}]}],
    }  # fmt: skip
    assert plan_problems(full) == (
        ["a Sort over an unbounded read of images (keys ['id'])", "Seq Scan on images"],
        [],
    )
    assert plan_problems(merged) == ([], [])
    group = {
        "Node Type": "Sort", "Sort Key": ["id"], "Plans": [
            {"Node Type": "Bitmap Heap Scan", "Relation Name": "images",
             "Recheck Cond": "((name = 'r/a'::text) AND (id > 'x'::text))"}]}  # fmt: skip
    assert plan_problems(group) == ([], ["a Sort of one repository's rows (keys ['id'])"])
    whole = {
        "Node Type": "Incremental Sort", "Sort Key": ["registry DESC", "created_ns"],
        "Presorted Key": ["images.registry"], "Plans": [
            {"Node Type": "Index Scan", "Relation Name": "images", "Index Name": "i",
             "Scan Direction": "Backward"}]}  # fmt: skip
    assert plan_problems(whole)[0] == [
        "an Incremental Sort of the whole scope (keys ['registry DESC', 'created_ns'])"
    ]


async def test_every_list_shape_reads_an_index_in_order(listing_db: str) -> None:
    conn = await asyncpg.connect(listing_db)
    try:
        plans = await shape_plans(conn)
    finally:
        await conn.close()
    assert len(plans) == 3 * len(ORDERS) * 2 * 2
    failures = [
        f"{scope} {order} {page} {mode}: {problems} {indexes_used(plan)}"
        for scope, order, page, mode, plan in plans
        if (problems := plan_problems(plan, CONSTANT[scope])[0])
        or not (indexes_used(plan) or (page == "deep" and plan_problems(plan)[1]))
    ]
    assert not failures, "\n".join(failures)
    # first pages never sort a repository either
    assert not [p for _, _, page, _, p in plans if page == "first" and plan_problems(p)[1]]


def plan_outline(plan: dict[str, Any]) -> list[str]:
    """A plan's nodes in order, with the index each scan reads and its direction."""
    return [
        f"{node['Node Type']} {node.get('Index Name', '')} {node.get('Scan Direction', '')}".strip()
        for node in _walk(plan)
    ]


async def test_the_shapes_run_generically_have_index_ordered_generic_plans(listing_db: str) -> None:
    """The shapes ``generic_plan`` runs generically read every registry in index order.

    For the first page and the pages after 10 %, 50 % and 90 % of the biggest folder,
    in each order of the load mix: the generic plan is the custom one, or better than
    it, never worse: it has no problem of ``plan_problems`` and not even the sort of a
    repository's rows that a custom plan takes at times (a bitmap read of the cursor's
    name group when the planner, knowing the name, estimates it small). The shapes left
    to ``auto`` are the others.
    """
    conn = await asyncpg.connect(listing_db)
    outcomes = []
    try:
        for scope, value in (await _scopes(conn)).items():
            for order in ORDERS:
                request = _request(scope, value, order)
                first = shape_of(request, after_cursor=False)
                assert generic_plan(first) == (scope == "folderId" and bool(order))
                assert generic_plan(shape_of(request, after_cursor=True)) == generic_plan(first)
                if not generic_plan(first):
                    continue
                first_sql = list_sql(first)
                total = await conn.fetchval(
                    f"SELECT count(*) FROM ({first_sql}) AS page",
                    *await _params(conn, request, None, 10**9),
                )
                pages: list[tuple[str, list[Any]]] = [
                    (first_sql, await _params(conn, request, None, LIMIT))
                ]
                for share in (10, 50, 90):
                    rows = await conn.fetch(
                        first_sql, *await _params(conn, request, None, total * share // 100)
                    )
                    cursor = sort_values(request.order, rows[-1])
                    pages.append(
                        (
                            list_sql(shape_of(request, after_cursor=True)),
                            await _params(conn, request, cursor, LIMIT),
                        )
                    )
                for sql, params in pages:
                    custom = await _explain(conn, sql, params, "force_custom_plan")
                    generic = await _explain(conn, sql, params, "force_generic_plan")
                    assert plan_problems(generic, CONSTANT[scope]) == ([], []), (order, params)
                    assert indexes_used(generic)
                    outcomes.append(plan_outline(generic) == plan_outline(custom))
    finally:
        await conn.close()
    assert len(outcomes) == 3 * 4  # the three orders of a folder, 4 pages each
    assert sum(outcomes) >= 9, f"{outcomes}: the generic plan differs from the custom one often"


async def test_a_generic_page_leaves_the_session_mode_as_it_was(listing_db: str) -> None:
    """The page runs under force_generic_plan; after it, and after a failed one, the
    session is back on auto (the pool is shared with statements that need custom plans)."""
    conn = await asyncpg.connect(listing_db)
    try:
        rows = await fetch_generic(conn, "SELECT current_setting('plan_cache_mode') AS mode", [])
        assert rows[0]["mode"] == "force_generic_plan"
        assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
        with pytest.raises(asyncpg.DivisionByZeroError):
            await fetch_generic(conn, "SELECT 1 / $1::int", [0])
        assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await conn.close()


# Orders led by name whose later keys run the other way: no index gives a repository's
# rows in their order (mirror.api.list_query._repositories_against_the_index).
AGAINST_THE_INDEX = (
    "name desc",
    "name, digest desc",
    "name desc, created_at",
    "name, created_at desc",
)
SMALL_PAGE = 5


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows of ``images`` a plan fetched from the heap, kept or filtered out (index-only
    name probes not counted)."""
    return sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in _walk(plan)
        if node.get("Relation Name") == "images" and node["Node Type"] != "Index Only Scan"
    )


async def test_orders_against_the_index_read_a_page_not_whole_repositories(
    listing_db: str,
) -> None:
    """A page of an order led by ``name`` that sorts repositories against their index
    reads about a page of rows per registry, whatever the size of the repositories it
    starts in: before, every page sorted the whole repository where it began (at
    1,000,000 images 1,133 rows and 8-17 ms for a page of 100)."""
    conn = await asyncpg.connect(listing_db)
    try:
        scopes = await _scopes(conn)
        checked = 0
        for scope in ("registryId", "folderId"):
            column = "split_part(name, '/', 1)" if scope == "registryId" else "folder_id"
            repository, biggest, registries = await conn.fetchrow(
                f"SELECT name, count(*), (SELECT count(DISTINCT registry) FROM images"
                f" WHERE {column} = $1) FROM images WHERE {column} = $1"
                " GROUP BY name ORDER BY count(*) DESC, name LIMIT 1",
                scopes[scope],
            )
            # three branches after a cursor, each at most a page, in each registry
            bound = 3 * SMALL_PAGE * registries
            assert biggest > 2 * bound, (scope, biggest, registries)
            for order in AGAINST_THE_INDEX:
                query = {scope: scopes[scope], "pageSize": str(SMALL_PAGE), "orderBy": order}
                request = parse_list_request(query)
                first_sql = list_sql(shape_of(request, after_cursor=False))
                # the cursor: the first row of the biggest repository, in the page's order
                rows = await conn.fetch(first_sql, *await _params(conn, request, None, 10**9))
                at = next(i for i, row in enumerate(rows) if row["name"] == repository)
                cursor = sort_values(request.order, rows[at])
                deep_sql = list_sql(shape_of(request, after_cursor=True))
                for sql, params in (
                    (first_sql, await _params(conn, request, None, SMALL_PAGE + 1)),
                    (deep_sql, await _params(conn, request, cursor, SMALL_PAGE + 1)),
                ):
                    for mode in ("force_custom_plan", "force_generic_plan"):
                        plan = await _explain(conn, sql, params, mode, analyze=True)
                        assert _rows_read(plan) <= bound, (scope, order, mode, params)
                        checked += 1
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.close()
    assert checked == 2 * len(AGAINST_THE_INDEX) * 2 * 2
