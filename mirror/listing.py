"""The ImageService List request contract, as pure logic.

Both the upstream simulator and the mirror's local API parse List requests
here, so the two answer every request identically: the same validation, the
same error messages, the same scope precedence and the same order.

Decisions where the seed pages (``../shared/seeds``) are silent, kept in one place:

- **Scope.** ``repositoryName`` wins over ``registryId``, which wins over
  ``folderId``; the ignored ones are still validated (the cloud validates the
  whole request message before it looks at any field). The pages mark none of
  the three as required, yet the method lists images "in the specified registry
  or repository" and there is nothing to authorize a scopeless call against, so
  a request with none of them is ``INVALID_ARGUMENT``. An empty value counts as
  absent, as it does for a proto3 string.
- **pageSize.** An int64: ``0`` or absent means the default (100); negative,
  above 1000, or not an integer (``+5`` is fine, ``5.0`` and ``0x5`` are not) is
  ``INVALID_ARGUMENT``.
- **filter.** One condition on the field ``name``: ``name="v"``, ``name!="v"``,
  ``name IN ("a", "b")``, ``name NOT IN ("a")``. Values are double-quoted, at most
  256 characters, and match the repository-name pattern; keywords are
  case-insensitive; spaces around tokens are free.
- **orderBy.** Comma-separated fields among ``name``, ``digest``, ``created_at``,
  each optionally followed by ``asc`` or ``desc`` (case-insensitive); a field at
  most once. The order is always completed by ``id ASC``, the final tie-breaker,
  so every order is total and pages are deterministic.
- A query parameter given twice is ``INVALID_ARGUMENT`` (a gRPC gateway refuses
  repeated values for a singular field); unknown parameters are ignored.
- **Ids** (``folderId``, ``registryId``, ``imageId``, ``operationId``): the pages
  say only "at most 50 characters". Every id the cloud issues is letters, digits,
  ``-`` and ``_`` (``crp…``, ``b1g…``), the alphabet scopes are configured in, so
  anything else (a NUL, a space, ``/``, ``..``, non-ASCII) is ``INVALID_ARGUMENT``:
  no such id can exist, and such text must never reach a database or an upstream URL.
- **Integers** (``pageSize`` and the mirror's own counts): an int64 is at most 19
  digits; a longer number (leading zeros aside) is out of range without being
  converted, whatever its length.

Only the stdlib, ``mirror.errors`` and ``mirror.model`` are imported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import total_ordering
from typing import Any

from mirror.errors import InvalidArgument
from mirror.model import ID_MAX_LEN, REPOSITORY_NAME_RE, Scope, ScopeKind

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PAGE_TOKEN_MAX_LEN = 100
FILTER_MAX_LEN = 1000
FILTER_VALUE_MAX_LEN = 256
ORDER_BY_MAX_LEN = 100

# A gRPC gateway parses int64 query values with strconv.ParseInt: an optional sign and digits.
_INT64_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = 2**63 - 1
_INT64_MAX_DIGITS = len(str(_INT64_MAX))
# The alphabet of every id the cloud issues.
ID_RE = re.compile(r"[A-Za-z0-9_-]+")


class SortField(StrEnum):
    NAME = "name"
    DIGEST = "digest"
    CREATED_AT = "created_at"


@dataclass(frozen=True, slots=True)
class SortKey:
    field: SortField
    descending: bool = False

    def __str__(self) -> str:
        return f"{self.field.value} {'desc' if self.descending else 'asc'}"


class FilterOp(StrEnum):
    EQ = "="
    NE = "!="
    IN = "IN"
    NOT_IN = "NOT IN"


@dataclass(frozen=True, slots=True)
class NameFilter:
    """One condition on the image ``name``. ``=`` and ``!=`` carry exactly one value."""

    op: FilterOp
    values: tuple[str, ...]

    def matches(self, name: str) -> bool:
        if self.op is FilterOp.EQ:
            return name == self.values[0]
        if self.op is FilterOp.NE:
            return name != self.values[0]
        if self.op is FilterOp.IN:
            return name in self.values
        return name not in self.values

    @property
    def selects(self) -> bool:
        """True when the filter names the images it keeps (``=`` / ``IN``), not those it drops."""
        return self.op in (FilterOp.EQ, FilterOp.IN)

    def __str__(self) -> str:
        if self.op in (FilterOp.EQ, FilterOp.NE):
            return f'name{self.op.value}"{self.values[0]}"'
        quoted = ", ".join(f'"{value}"' for value in self.values)
        return f"name {self.op.value} ({quoted})"


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A validated List request. ``page_size`` is effective (the default applied)."""

    scope: Scope
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str = ""
    filter: NameFilter | None = None
    order: tuple[SortKey, ...] = ()

    @property
    def query_key(self) -> str:
        """What selects and orders the rows, canonically: a page token is bound to it.

        Page size and token are left out: a client may change the page size between pages.
        """
        filter_text = str(self.filter) if self.filter else ""
        order_text = ",".join(str(key) for key in self.order)
        return f"{self.scope}|{filter_text}|{order_text}"


def matches(name_filter: NameFilter | None, name: str) -> bool:
    """Whether an image named ``name`` passes the filter (no filter passes everything)."""
    return name_filter is None or name_filter.matches(name)


# -- the request ---------------------------------------------------------------

_PARAMS = ("registryId", "repositoryName", "folderId", "pageSize", "pageToken", "filter", "orderBy")


def parse_list_request(query: Mapping[str, str] | Iterable[tuple[str, str]]) -> ListRequest:
    """Validate List query parameters (camelCase, as the REST API names them).

    ``query`` is a mapping or the (name, value) pairs of a query string (an aiohttp
    ``request.query`` works as is, and its repeated keys are seen).
    """
    pairs = query.items() if isinstance(query, Mapping) else query
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMS:
            continue
        if name in given:
            raise InvalidArgument(f"invalid {name}: given more than once")
        given[name] = value

    registry_id = _resource_id("registryId", given.get("registryId", ""))
    folder_id = _resource_id("folderId", given.get("folderId", ""))
    repository_name = given.get("repositoryName", "")
    if repository_name and not REPOSITORY_NAME_RE.fullmatch(repository_name):
        raise InvalidArgument(
            f"invalid repositoryName: {_quote(repository_name)} does not match "
            f"{REPOSITORY_NAME_RE.pattern}"
        )
    page_size = parse_page_size(given.get("pageSize", ""))
    page_token = given.get("pageToken", "")
    if len(page_token) > PAGE_TOKEN_MAX_LEN:
        raise InvalidArgument(
            f"invalid pageToken: longer than {PAGE_TOKEN_MAX_LEN} characters ({len(page_token)})"
        )
    name_filter = parse_filter(given.get("filter", ""))
    order = parse_order_by(given.get("orderBy", ""))

    if repository_name:
        scope = Scope(ScopeKind.REPOSITORY, repository_name)
    elif registry_id:
        scope = Scope(ScopeKind.REGISTRY, registry_id)
    elif folder_id:
        scope = Scope(ScopeKind.FOLDER, folder_id)
    else:
        raise InvalidArgument("one of repositoryName, registryId or folderId is required")
    return ListRequest(scope, page_size, page_token, name_filter, order)


def validate_resource_id(param: str, value: str) -> str:
    """A required id path parameter (``imageId``, ``operationId``): 1-50 id characters."""
    if not value:
        raise InvalidArgument(f"invalid {param}: required")
    return _resource_id(param, value)


def _resource_id(param: str, value: str) -> str:
    """An id parameter ('' allowed: absent): at most 50 letters, digits, '-' or '_'."""
    if len(value) > ID_MAX_LEN:
        raise InvalidArgument(
            f"invalid {param}: longer than {ID_MAX_LEN} characters ({len(value)})"
        )
    if value and not ID_RE.fullmatch(value):
        raise InvalidArgument(
            f"invalid {param}: {_quote(value)} is not an id (letters, digits, '-' and '_' only)"
        )
    return value


def validate_optional_id(param: str, value: str) -> str:
    """An optional id query parameter (``folderId``, ``registryId``): '' means absent."""
    return _resource_id(param, value)


def parse_int64(param: str, text: str) -> int:
    """A non-empty int64 query value as ``strconv.ParseInt`` reads it, without ever converting
    a number too long to be one (Python refuses to convert more than 4,300 digits)."""
    if not _INT64_RE.fullmatch(text):
        raise InvalidArgument(f"invalid {param}: {_quote(text)} is not an integer")
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > _INT64_MAX_DIGITS:
        raise InvalidArgument(f"invalid {param}: {_quote(text)} is out of the int64 range")
    value = -int(digits) if text.startswith("-") else int(digits)
    if value > _INT64_MAX or value < -_INT64_MAX - 1:
        raise InvalidArgument(f"invalid {param}: {_quote(text)} is out of the int64 range")
    return value


def parse_page_size(text: str) -> int:
    """The effective page size for a ``pageSize`` value ('' and '0' mean the default)."""
    if text == "":
        return DEFAULT_PAGE_SIZE
    value = parse_int64("pageSize", text)
    if value < 0:
        raise InvalidArgument(f"invalid pageSize: must not be negative, got {value}")
    if value > MAX_PAGE_SIZE:
        raise InvalidArgument(f"invalid pageSize: must be at most {MAX_PAGE_SIZE}, got {value}")
    return value or DEFAULT_PAGE_SIZE


# -- filter grammar --------------------------------------------------------------

_FILTER_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<string>"[^"]*")
      | (?P<open_string>"[^"]*$)
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<op>!=|=|\(|\)|,)
      | (?P<other>\S)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string, word, op, end
    text: str
    pos: int  # 1-based column, for messages


def _tokenize_filter(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        match = _FILTER_TOKEN_RE.match(text, pos)
        if match is None:  # only trailing whitespace is left
            break
        kind = match.lastgroup or "other"
        start = match.start(kind) + 1
        if kind == "open_string":
            raise InvalidArgument(f"invalid filter: unterminated string at position {start}")
        if kind == "other":
            raise InvalidArgument(
                f"invalid filter: unexpected character {match.group(kind)!r} at position {start}"
            )
        tokens.append(_Token(kind, match.group(kind), start))
        pos = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def parse_filter(text: str) -> NameFilter | None:
    """A ``filter`` value as a NameFilter ('' or only spaces: no filter)."""
    if len(text) > FILTER_MAX_LEN:
        raise InvalidArgument(
            f"invalid filter: longer than {FILTER_MAX_LEN} characters ({len(text)})"
        )
    if not text.strip():
        return None
    parser = _FilterParser(_tokenize_filter(text))
    return parser.parse()


class _FilterParser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, expected: str) -> InvalidArgument:
        token = self.peek()
        found = "end of filter" if token.kind == "end" else repr(token.text)
        return InvalidArgument(
            f"invalid filter: expected {expected} at position {token.pos}, found {found}"
        )

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "word" and token.text.upper() == word:
            self.i += 1
            return True
        return False

    def punct(self, symbol: str) -> bool:
        token = self.peek()
        if token.kind == "op" and token.text == symbol:
            self.i += 1
            return True
        return False

    def parse(self) -> NameFilter:
        field = self.peek()
        if field.kind != "word":
            raise self.fail("a field name")
        if field.text != "name":
            raise InvalidArgument(
                f"invalid filter: unknown field {field.text!r} at position {field.pos} "
                "(only 'name' can be filtered on)"
            )
        self.take()
        if self.punct("="):
            result = NameFilter(FilterOp.EQ, (self.value(),))
        elif self.punct("!="):
            result = NameFilter(FilterOp.NE, (self.value(),))
        elif self.keyword("IN"):
            result = NameFilter(FilterOp.IN, self.value_list())
        elif self.keyword("NOT"):
            if not self.keyword("IN"):
                raise self.fail("IN after NOT")
            result = NameFilter(FilterOp.NOT_IN, self.value_list())
        else:
            raise self.fail("an operator (=, !=, IN or NOT IN)")
        if self.peek().kind != "end":
            raise self.fail("end of filter (one condition only)")
        return result

    def value_list(self) -> tuple[str, ...]:
        if not self.punct("("):
            raise self.fail("'(' opening a list of values")
        values = [self.value()]
        while self.punct(","):
            values.append(self.value())
        if not self.punct(")"):
            raise self.fail("',' or ')' in a list of values")
        return tuple(values)

    def value(self) -> str:
        token = self.peek()
        if token.kind != "string":
            raise self.fail('a double-quoted value ("...")')
        self.take()
        value = token.text[1:-1]
        if len(value) > FILTER_VALUE_MAX_LEN:
            raise InvalidArgument(
                f"invalid filter: the value at position {token.pos} is longer than "
                f"{FILTER_VALUE_MAX_LEN} characters ({len(value)})"
            )
        if not REPOSITORY_NAME_RE.fullmatch(value):
            raise InvalidArgument(
                f"invalid filter: the value {_quote(value)} at position {token.pos} does not match "
                f"{REPOSITORY_NAME_RE.pattern}"
            )
        return value


# -- orderBy -----------------------------------------------------------------------

_DIRECTIONS = {"asc": False, "desc": True}


def parse_order_by(text: str) -> tuple[SortKey, ...]:
    """An ``orderBy`` value as sort keys ('' or only spaces: the default order, id ASC)."""
    if len(text) > ORDER_BY_MAX_LEN:
        raise InvalidArgument(
            f"invalid orderBy: longer than {ORDER_BY_MAX_LEN} characters ({len(text)})"
        )
    if not text.strip():
        return ()
    keys: list[SortKey] = []
    seen: set[SortField] = set()
    for item in text.split(","):
        words = item.split()
        if not words:
            raise InvalidArgument("invalid orderBy: empty item (a stray comma?)")
        if len(words) > 2:
            raise InvalidArgument(
                f"invalid orderBy: {_quote(item.strip())} is not 'field' or 'field asc|desc'"
            )
        try:
            field = SortField(words[0])
        except ValueError:
            allowed = ", ".join(f.value for f in SortField)
            raise InvalidArgument(
                f"invalid orderBy: unknown field {_quote(words[0])} (allowed: {allowed})"
            ) from None
        descending = False
        if len(words) == 2:
            direction = words[1].lower()
            if direction not in _DIRECTIONS:
                raise InvalidArgument(
                    f"invalid orderBy: unknown direction {_quote(words[1])} after {field.value} "
                    "(asc or desc)"
                )
            descending = _DIRECTIONS[direction]
        if field in seen:
            raise InvalidArgument(f"invalid orderBy: field {field.value} given more than once")
        seen.add(field)
        keys.append(SortKey(field, descending))
    return tuple(keys)


# -- the order ---------------------------------------------------------------------


@total_ordering
class Descending:
    """Wraps a value so that it sorts in reverse (for strings, which cannot be negated)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descending) and self.value == other.value

    def __lt__(self, other: Descending) -> bool:
        return bool(other.value < self.value)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Descending({self.value!r})"


_RFC3339_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})"
)


def created_at_ns(text: str) -> int:
    """An RFC 3339 timestamp as integer nanoseconds since the epoch (exact, unlike a float).

    Text comparison would be wrong: ``...:00Z`` sorts after ``...:00.5Z``.
    """
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    seconds = int(datetime.fromisoformat(f"{day}T{clock}{zone}").timestamp())
    nanos = int((fraction or "").ljust(9, "0") or 0)
    return seconds * 1_000_000_000 + nanos


def sort_value(field: SortField, image: Mapping[str, Any]) -> Any:
    """The value an image (upstream JSON shape) sorts by for ``field``, ascending."""
    if field is SortField.NAME:
        return image.get("name", "")
    if field is SortField.DIGEST:
        return image.get("digest", "")
    created = image.get("createdAt", "")
    return created_at_ns(created) if created else 0


def image_sort_key(order: tuple[SortKey, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A key function for images in the upstream JSON shape: ``order``, then ``id`` ascending.

    ``sorted(images, key=image_sort_key(request.order))`` is the order a List answers in.
    """

    def key(image: Mapping[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for sort_key in order:
            value = sort_value(sort_key.field, image)
            if sort_key.descending:
                value = -value if isinstance(value, int) else Descending(value)
            parts.append(value)
        parts.append(image.get("id", ""))
        return tuple(parts)

    return key


def _quote(text: str) -> str:
    """A value for an error message: quoted, cut short when long, control characters escaped."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    shown = shown.replace("\\", "\\\\").replace('"', '\\"')
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in shown)
    return '"' + shown + '"'
