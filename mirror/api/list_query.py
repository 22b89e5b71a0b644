"""The SQL of one List page: a keyset scan in the upstream's order.

The order is the request's sort keys completed by ``id ASC`` (``mirror.listing``).
A page after a cursor must start right after the cursor's key in that order. With
mixed directions no single row comparison says "after", so the condition is split
into disjoint branches, one per sort-key prefix, each an index range scan:

    k1 = v1 AND k2 = v2 AND id > v_id     -- the cursor's own tie group
    k1 = v1 AND k2 >(<) v2                -- the rest of k1's group
    k1 >(<) v1                            -- everything after

Each branch takes at most ``limit`` rows in the full order and a merge keeps the
first ``limit``. An order led by ``name`` whose later keys run the other way
(``name DESC``, ``name, digest DESC``, ``name DESC, created_at``...) matches no index
of a registry: such a page walks the registry's repositories in order and reads each
one from the repository's own index (``_each_repository``), about ``limit`` rows
whatever the repositories' size. A folder holds several registries: its pages merge the same
scan over each registry of the folder (found by a loose index scan), so the
per-registry indexes serve it too.

A filter that names repositories (``name = …``, ``name IN (…)``) fans out the
same way, one scan per wanted repository on the repository's own index, so a
filter never turns a page into a scan of everything it leaves out.

The SQL text depends only on the request's shape (scope kind, filter operator,
order, cursor or not), never on its values, which are always ``$n`` parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg

from mirror.listing import FilterOp, ListRequest, NameFilter, SortField, SortKey
from mirror.model import ScopeKind, digest_key, digest_text, registry_of_name

COLUMNS = {SortField.NAME: "name", SortField.DIGEST: "digest", SortField.CREATED_AT: "created_ns"}
# What an image's JSON is made of (``mirror.api.image_list.row_json``): the doc of a
# row written before sql/104, else its template, filled in by this process with the
# row's digest and blob keys (~1 µs an image in C; in PostgreSQL, format() in
# ``image_doc``, ~4-7 µs, and the whole JSON to send: bench/RESULTS.md, 2026-12-03).
# The keys come as one bytea (``array_send``): a bytea[] would be a bytes object a key;
# so do the sizes, which only a template of the second kind (``blob_ids``, sql/111) reads.
IMAGE_PARTS = (
    "convert_to(doc::text, 'UTF8') AS doc, convert_to(doc_template, 'UTF8') AS doc_template,"
    " array_send(blob_digests) AS blob_keys, blob_ids,"
    " CASE WHEN blob_ids IS NOT NULL THEN array_send(blob_sizes) END AS blob_sizes"
)
SELECT_LIST = f"id, registry, folder_id, name, digest, created_ns, {IMAGE_PARTS}"

# The distinct registries of a folder (their numbers, sql/120), one index descent each
# (images_folder_registry).
FOLDER_REGISTRIES = """
WITH RECURSIVE folder_registries(registry) AS (
    (SELECT registry FROM images WHERE folder_id = $1 ORDER BY registry LIMIT 1)
    UNION ALL
    SELECT (SELECT i.registry FROM images i
            WHERE i.folder_id = $1 AND i.registry > r.registry
            ORDER BY i.registry LIMIT 1)
    FROM folder_registries r
    WHERE r.registry IS NOT NULL
)"""


SELECT_REGISTRY_NUMBERS = "SELECT name, id FROM image_registries WHERE name = ANY($1::text[])"


class RegistryNumbers:
    """The numbers of registries (sql/120), remembered: a number never changes once drawn.

    A registry the index does not hold yet is looked up again next time (it has no number
    until an ingest meets it), so only the index's registries are remembered."""

    def __init__(self) -> None:
        self._known: dict[str, int] = {}

    async def of(self, conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, int | None]:
        wanted = set(ids)
        missing = sorted(wanted - self._known.keys())
        if missing:
            for row in await conn.fetch(SELECT_REGISTRY_NUMBERS, missing):
                self._known[row["name"]] = row["id"]
        return {i: self._known.get(i) for i in wanted}


@dataclass(frozen=True, slots=True)
class ListShape:
    """What the SQL text of a page depends on."""

    scope: ScopeKind
    filter_op: FilterOp | None
    order: tuple[SortKey, ...]
    after_cursor: bool


def generic_plan(shape: ListShape) -> bool:
    """Whether a page of this shape runs PostgreSQL's generic plan (``force_generic_plan``).

    A prepared statement under ``plan_cache_mode = auto`` is planned anew on every
    execution until its generic plan looks no dearer than the custom ones. A registry's
    or repository's page gets there after five runs. A folder's merge of its registries
    never does (the generic plan's cost counts a ``LIMIT $n`` of unknown size), so it
    was planned on every page: 0.2-0.6 ms, up to half of the page's time in
    PostgreSQL, for a plan no better than the generic one (an index-ordered read of
    each registry; tests/integration/test_list_plans.py checks it for every order at
    four depths). A filter keeps the default.
    """
    return shape.scope is ScopeKind.FOLDER and bool(shape.order) and shape.filter_op is None


def shape_of(request: ListRequest, *, after_cursor: bool) -> ListShape:
    return ListShape(
        request.scope.kind,
        request.filter.op if request.filter else None,
        request.order,
        after_cursor,
    )


def sort_values(order: Sequence[SortKey], row: Any) -> list[str | int]:
    """A row's key in the page order: its sort-key values, then its id; a digest as its
    text (the row holds its key, sql/120), as a page token carries it."""
    return [
        digest_text(row["digest"]) if key.field is SortField.DIGEST else row[COLUMNS[key.field]]
        for key in order
    ] + [row["id"]]


def registries_named(request: ListRequest) -> list[str]:
    """The registry ids whose numbers (sql/120) ``list_params`` needs: the scope's
    registry, and the registries of the repositories a filter selects."""
    ids: list[str] = []
    if request.scope.kind is ScopeKind.REGISTRY:
        ids.append(request.scope.id)
    elif request.scope.kind is ScopeKind.REPOSITORY:
        ids.append(registry_of_name(request.scope.id))
    if request.filter is not None and request.filter.op in (FilterOp.EQ, FilterOp.IN):
        ids += (registry_of_name(name) for name in request.filter.values)
    return ids


def list_params(
    request: ListRequest,
    cursor: Sequence[str | int | None] | None,
    limit: int,
    numbers: Mapping[str, int | None],
) -> list[Any]:
    """The parameters of ``list_sql(shape_of(request, ...))``, in ``$n`` order.

    ``numbers``: the number of each registry in ``registries_named(request)`` (None for
    one the index never held): the SQL compares ``images.registry`` with a parameter,
    so that a custom plan knows the registry and its size, as it knew its id before."""
    params: list[Any] = []
    if request.scope.kind is ScopeKind.REPOSITORY:
        name = request.scope.id
        params += [numbers.get(registry_of_name(name)), name]
    elif request.scope.kind is ScopeKind.REGISTRY:
        params.append(numbers.get(request.scope.id))
    else:
        params.append(request.scope.id)
    if request.filter is not None:
        wanted = _filter_param(request.filter)
        params.append(wanted)
        if request.filter.op in (FilterOp.EQ, FilterOp.IN):
            params.append([numbers.get(registry_of_name(name)) for name in wanted])
    if cursor is not None:
        # a digest is compared as its stored key (sql/120); the cursor ends with the id
        fields = [key.field for key in request.order] + [None]
        params += [
            digest_key(str(value)) if field is SortField.DIGEST else value
            for field, value in zip(fields, cursor, strict=True)
        ]
    params.append(limit)
    return params


@lru_cache(maxsize=512)
def list_sql(shape: ListShape) -> str:
    """The SQL of a page of this shape (cached: there are a few hundred shapes at most)."""
    params = _Params()
    # A registry is compared as its number (sql/120), the parameter list_params gives.
    if shape.scope is ScopeKind.REPOSITORY:
        registry, name = params.next(), params.next()
        scope, scope_equal = (
            f"{_same('registry', registry)} AND name = {name}",
            (f"registry = {registry} AND name = {name}"),
        )
        prefix = "registry"
    elif shape.scope is ScopeKind.REGISTRY:
        registry = params.next()
        scope, scope_equal = _same("registry", registry), f"registry = {registry}"
        prefix = "registry"
    else:
        folder = params.next()
        scope, scope_equal = _same("folder_id", folder), f"folder_id = {folder}"
        prefix = "folder_id"
    filter_param = params.next() if shape.filter_op is not None else ""
    # the numbers of the wanted repositories' registries, in the names' order
    wanted_registries = params.next() if shape.filter_op in (FilterOp.EQ, FilterOp.IN) else ""
    cursor = [params.next() for _ in range(len(shape.order) + 1)] if shape.after_cursor else None
    limit = params.next()
    order_by = _order_by(shape.order)

    if shape.filter_op in (FilterOp.EQ, FilterOp.IN):
        # The filter names the repositories: merge one scan per repository, each on
        # the (registry, name, ...) index of the order, whatever the scope.
        conditions = ["registry = wanted.registry", "name = wanted.name", scope_equal]
        inner = _page(conditions, shape.order, cursor, limit, None)
        return (
            f"SELECT page.* FROM unnest({filter_param}::text[], {wanted_registries}::integer[])"
            " AS wanted(name, registry),\n"
            f"LATERAL ({inner}) AS page\n"
            f"ORDER BY {order_by} LIMIT {limit}"
        )
    excluded = [_filter_condition(shape.filter_op, filter_param)] if shape.filter_op else []
    if shape.scope is ScopeKind.FOLDER and shape.order:
        # Merge the per-registry scans: the registry indexes carry every order. Here
        # registry is a plain equality: estimated as a whole registry (a range on
        # a run-time value would look like a few rows, and a sort of them cheap).
        # The order has keys besides id, which no index without registry serves.
        conditions = [
            f"registry = folder_registries.registry AND folder_id = {folder}",
            *excluded,
        ]
        each_registry = _OneRegistry(
            "folder_registries.registry", (f"folder_id = {folder}", *excluded)
        )
        inner = _page(
            conditions, shape.order, cursor, limit, "registry", one_registry=each_registry
        )
        return (
            f"{FOLDER_REGISTRIES}\n"
            f"SELECT page.* FROM folder_registries,\n"
            f"LATERAL ({inner}) AS page\n"
            f"WHERE folder_registries.registry IS NOT NULL\n"
            f"ORDER BY {order_by} LIMIT {limit}"
        )
    one_registry = (
        _OneRegistry(registry, tuple(excluded)) if shape.scope is ScopeKind.REGISTRY else None
    )
    return _page(
        [scope, *excluded],
        shape.order,
        cursor,
        limit,
        prefix,
        _lead_descending(shape),
        one_registry,
    )


def _same(column: str, value: str) -> str:
    """``column = value``, spelled so that only an index led by ``column`` can give the order.

    With a plain equality the planner drops ``column`` from the ORDER BY (it is
    constant) and may walk another index in order (the primary key, for
    ``ORDER BY id``), filtering the scope row by row: a LIMIT plan that reads a
    whole other registry when ids correlate with registries. As a closed range
    the scope column stays in the ORDER BY, which only the scope's indexes match.
    """
    return f"{column} >= {value} AND {column} <= {value}"


def _lead_descending(shape: ListShape) -> bool:
    """Whether the first sort key that varies in the scope is descending.

    In a repository scope ``name`` is constant: an order led by ``name DESC`` is
    read in the direction of the key after it (or of ``id``), so that the
    ``(registry, name, <key>, id)`` index serves it forward or backward.
    """
    if shape.scope is ScopeKind.REPOSITORY:
        return _descending_within_repository(shape.order)
    return bool(shape.order) and shape.order[0].descending


def _descending_within_repository(order: tuple[SortKey, ...]) -> bool:
    """Whether the first key after ``name`` (``id ASC`` when there is none) is descending."""
    for key in order:
        if key.field is not SortField.NAME:
            return key.descending
    return False


def _repositories_against_the_index(order: tuple[SortKey, ...]) -> bool:
    """Whether an order is led by ``name`` and sorts a repository's rows the other way.

    ``(registry, name, <key>, id)`` read forward or backward gives ``name`` and
    ``<key>`` in one direction. Otherwise each repository's rows come out of the index
    in ``name`` order only, and PostgreSQL sorts a whole repository (an Incremental
    Sort of its group: 1,133 rows in two registries and 8-17 ms for a deep page of
    1,000,000 images, against 0.8 ms read one repository at a time). ``name, <key>``
    in one direction with ``id`` the other way only sorts ties of ``<key>``.
    """
    if not order or order[0].field is not SortField.NAME:
        return False
    if len(order) == 1:
        return order[0].descending  # then id ASC
    return any(key.descending != order[0].descending for key in order[1:])


@dataclass(frozen=True, slots=True)
class _OneRegistry:
    """A scan of one registry: how it names the registry, and its other conditions."""

    registry: str
    conditions: tuple[str, ...]


def _each_repository(
    scan: _OneRegistry, order: tuple[SortKey, ...], limit: str, after_name: str | None
) -> str:
    """Rows of one registry in ``order`` (led by ``name``), read one repository at a time.

    The registry's names in the order's direction (one index descent each,
    ``images_registry_name``), strictly after ``after_name`` when given; for each,
    that repository's rows as a repository scope reads them (its own index, forward or
    backward), until ``limit`` rows. The rows come in the order of the names: a
    LATERAL reference makes a nested loop over the names, and a recursive CTE yields
    its rows in the order it makes them, one name a step.
    """
    registry = scan.registry
    direction, beyond = ("DESC", "<") if order[0].descending else ("ASC", ">")
    start = f" AND name {beyond} {after_name}" if after_name is not None else ""
    repository = _page(
        [f"{_same('registry', registry)} AND name = names.name", *scan.conditions],
        order,
        None,
        limit,
        "registry",
        _descending_within_repository(order),
    )
    return (
        "WITH RECURSIVE names(name) AS (\n"
        f"    (SELECT name FROM images WHERE registry = {registry}{start} "
        f"ORDER BY name {direction} LIMIT 1)\n"
        "    UNION ALL\n"
        f"    SELECT (SELECT i.name FROM images i WHERE i.registry = {registry} "
        f"AND i.name {beyond} n.name ORDER BY i.name {direction} LIMIT 1)\n"
        "    FROM names n WHERE n.name IS NOT NULL)\n"
        f"SELECT repository.* FROM names, LATERAL ({repository}) AS repository\n"
        f"WHERE names.name IS NOT NULL LIMIT {limit}"
    )


def _page(
    conditions: list[str],
    order: tuple[SortKey, ...],
    cursor: list[str] | None,
    limit: str,
    prefix: str | None,
    lead_descending: bool | None = None,
    one_registry: _OneRegistry | None = None,
) -> str:
    """A page of one scan: the rows of ``conditions`` in ``order`` after ``cursor``.

    ``one_registry`` (a registry's scan, or a folder's scan of one of its registries):
    an order that sorts repositories against their index reads them one at a time
    (``_each_repository``) where the page would otherwise sort whole repositories.
    """
    where = " AND ".join(conditions)
    order_by = _order_by(order)
    if prefix is not None:
        # The constant scope column leads the order in the first key's direction, so
        # that a descending order is a backward scan of an ascending index.
        if lead_descending is None:
            lead_descending = bool(order) and order[0].descending
        leading = "DESC" if lead_descending else "ASC"
        order_by = f"{prefix} {leading}, {order_by}"
    by_repository = one_registry is not None and _repositories_against_the_index(order)
    if cursor is None and not by_repository:
        return f"SELECT {SELECT_LIST} FROM images WHERE {where} ORDER BY {order_by} LIMIT {limit}"
    # (depth, condition): the branch holds the first ``depth`` keys equal to the cursor's
    after = []
    if cursor is not None:
        after = list(zip(range(len(order), -1, -1), _after(order, cursor), strict=True))
    descending = [key.descending for key in order] + [False]  # then id ASC
    branches = []
    for depth, condition in after:
        branch_order = order_by
        if by_repository:
            if depth == 0:
                continue  # "name beyond the cursor's": the repositories after its own, below
            # Inside the cursor's repository: read in the direction of the key the range
            # is on, the constant prefix too, so that one index serves it either way.
            branch_order = f"{prefix} {'DESC' if descending[depth] else 'ASC'}, {_order_by(order)}"
        branches.append(
            f"(SELECT {SELECT_LIST} FROM images WHERE {where} AND {condition} "
            f"ORDER BY {branch_order} LIMIT {limit})"
        )
    if by_repository and one_registry is not None:
        after_name = cursor[0] if cursor is not None else None
        branches.append(f"({_each_repository(one_registry, order, limit, after_name)})")
    elif len(branches) == 1:
        return branches[0][1:-1]
    union = "\n    UNION ALL ".join(branches)
    return f"SELECT * FROM (\n    {union}\n) AS after_cursor ORDER BY {order_by} LIMIT {limit}"


def _after(order: tuple[SortKey, ...], cursor: list[str]) -> list[str]:
    """The disjoint conditions that together mean 'after the cursor', first group first.

    The tie prefix is plain equalities. A prepared statement runs a generic plan
    (PostgreSQL's ``plan_cache_mode = auto`` picks it for every registry-scope page
    after five runs; see ``generic_plan``), and there a closed range on a parameter
    (``created_ns >= $2 AND created_ns <= $2``) is estimated at a default fraction
    of the scope, not one tie group: the tie branch of a ``created_at`` or
    ``digest`` page was planned as a skip scan of another index (100,000 images,
    after 1,000 / 10,000 rows: 2.4 / 5.4 ms and 7.5 / 6.1 ms, against 0.2 ms with
    equalities; bench/RESULTS.md).
    """
    columns = [COLUMNS[key.field] for key in order] + ["id"]
    descending = [key.descending for key in order] + [False]
    branches = []
    for depth in range(len(columns) - 1, -1, -1):
        equal = [f"{columns[i]} = {cursor[i]}" for i in range(depth)]
        beyond = f"{columns[depth]} {'<' if descending[depth] else '>'} {cursor[depth]}"
        branches.append(" AND ".join([*equal, beyond]))
    return branches


def _order_by(order: tuple[SortKey, ...]) -> str:
    keys = [f"{COLUMNS[key.field]} {'DESC' if key.descending else 'ASC'}" for key in order]
    return ", ".join([*keys, "id ASC"])


def _filter_condition(op: FilterOp, param: str) -> str:
    """The condition of a filter that excludes names (``=`` and ``IN`` fan out instead)."""
    if op is FilterOp.NE:
        return f"name <> {param}"
    if op is FilterOp.NOT_IN:
        return f"name <> ALL({param}::text[])"
    raise ValueError(f"{op} selects names: it fans out, it is no filter condition")


def _filter_param(name_filter: NameFilter) -> str | list[str]:
    if name_filter.op is FilterOp.NE:
        return name_filter.values[0]
    # Each wanted name once: a name given twice must not list its images twice.
    return list(dict.fromkeys(name_filter.values))


class _Params:
    """Hands out ``$1``, ``$2``, ... in order."""

    def __init__(self) -> None:
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"${self._n}"
