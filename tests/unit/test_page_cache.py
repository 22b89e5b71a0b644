"""The List page cache's bookkeeping: one version at a time, newest wins, least recently used
pages go first when it is full."""

from __future__ import annotations

import orjson
import pytest

from mirror.api.image_list import make_page, page_body
from mirror.api.page_cache import LOOKUPS, Page, PageCache

DOC = b'{"id":"x"}'


def page(n: int, docs: int = 1) -> Page:
    return make_page([DOC] * docs, f"token-{n}")


def size(docs: int, token: str = "token-0") -> int:
    return len(page_body([DOC] * docs, token)) + 16 * docs + 64


@pytest.mark.parametrize("docs", [[], [DOC], [b'{"id":"a"}', b'{"id":"bb","n":[1,2]}', b"{}"]])
@pytest.mark.parametrize("token", ["", "next"])
def test_a_page_keeps_its_answer_and_finds_each_doc_in_it(docs: list[bytes], token: str) -> None:
    kept = make_page(docs, token)
    assert kept.body == page_body(docs, token) and kept.token == token
    assert kept.docs == docs
    assert orjson.loads(kept.body).get("images", []) == [orjson.loads(d) for d in docs]


def key(n: int) -> tuple[str, str, int]:
    return (f"registry/r{n}||", "", 100)


def hits() -> float:
    return LOOKUPS.labels("hit")._value.get()


def test_a_page_is_found_at_the_version_it_was_read_at() -> None:
    cache = PageCache()
    assert cache.get(key(1), 7) is None
    cache.put(key(1), 7, page(1))
    before = hits()
    assert cache.get(key(1), 7) == page(1)
    assert hits() == before + 1
    assert cache.get(key(2), 7) is None


def test_a_newer_version_empties_the_cache_and_an_older_one_finds_nothing() -> None:
    cache = PageCache()
    cache.put(key(1), 7, page(1))
    assert cache.get(key(1), 8) is None  # the index changed
    assert len(cache) == 0 and cache.version == 8
    cache.put(key(1), 7, page(1))  # read before the change: never kept
    assert len(cache) == 0
    cache.put(key(1), 8, page(1))
    assert cache.get(key(1), 7) is None  # a request that read an older version
    assert cache.get(key(1), 8) == page(1)  # which did not throw the newer pages away


def test_a_put_at_a_newer_version_moves_the_cache_there() -> None:
    cache = PageCache()
    cache.put(key(1), 7, page(1))
    cache.put(key(2), 9, page(2))
    assert cache.get(key(1), 9) is None and cache.get(key(2), 9) == page(2)


def test_the_least_recently_used_pages_go_first_when_full() -> None:
    one = size(10)
    cache = PageCache(max_bytes=3 * one)
    for n in range(3):
        cache.put(key(n), 1, page(n, docs=10))
    assert len(cache) == 3 and cache.bytes == 3 * one
    assert cache.get(key(0), 1) is not None  # 0 is now the most recently used
    cache.put(key(3), 1, page(3, docs=10))
    assert cache.get(key(1), 1) is None  # the least recently used went
    assert all(cache.get(key(n), 1) is not None for n in (0, 2, 3))
    assert cache.bytes == 3 * one


def test_a_page_bigger_than_the_cache_is_not_kept_and_a_replaced_one_is_counted_once() -> None:
    cache = PageCache(max_bytes=200)
    cache.put(key(1), 1, page(1, docs=50))
    assert len(cache) == 0 and cache.bytes == 0
    cache.put(key(2), 1, page(2))
    cache.put(key(2), 1, page(2))
    assert len(cache) == 1 and cache.bytes == size(1, "token-2")
