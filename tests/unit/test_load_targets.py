"""The load bench's List targets: the saved pages and the table of next pages that lets
bench/load_mix.lua page on without reading its answers (bench/load_bench.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import load_bench
from bench.load_bench import (
    NEXT_DEPTH,
    Outcome,
    Run,
    Targets,
    listing_targets,
    median_run,
    rates,
    request_path,
)

LISTING = "/container-registry/v1/images?folderId=f1&pageSize=100"


def tokens_to(pages: int) -> list[str]:
    """Tokens of pages 2 .. ``pages`` (characters a URL must escape included)."""
    return [f"tok/{n}+=" for n in range(2, pages + 1)]


def test_saved_pages_every_tenth_and_next_pages_five_past_each_start() -> None:
    tokens = tokens_to(26)  # the walk of --deep-pages 20 goes 25 pages deep: page 26 is known

    saved, after = listing_targets(LISTING, tokens, deep_pages=20)

    assert saved == [(LISTING, "tok/11+="), (LISTING, "tok/21+=")]
    starts = {1: None, 11: "tok/11+=", 21: "tok/21+="}
    expected = {}
    for start, token in starts.items():
        page = (LISTING, token)
        for number in range(start + 1, start + 1 + NEXT_DEPTH):
            expected[page] = f"tok/{number}+="
            page = (LISTING, f"tok/{number}+=")
    assert after == expected
    assert (LISTING, "tok/6+=") not in after  # five past the first page, no more


def test_a_short_listing_has_no_saved_page_and_no_next_past_its_end() -> None:
    saved, after = listing_targets(LISTING, tokens_to(3), deep_pages=100)

    assert saved == []
    assert after == {(LISTING, None): "tok/2+=", (LISTING, "tok/2+="): "tok/3+="}


def read_file(path: Path) -> tuple[dict[str, list[str]], dict[int, tuple[str, int]]]:
    """The targets file as load_mix.lua reads it: picks and paths by kind, pages by number."""
    picks: dict[str, list[str]] = {}
    pages: dict[int, tuple[str, int]] = {}
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == "page":
            pages[int(fields[1])] = (fields[2], int(fields[3]))
        elif fields[0] != "weight":
            picks.setdefault(fields[1] if fields[0] == "pick" else fields[0], []).append(
                fields[2] if fields[0] == "pick" else fields[1]
            )
    return picks, pages


def test_the_file_lets_a_client_page_on_as_its_answers_would_lead(tmp_path: Path) -> None:
    tokens = tokens_to(26)
    saved, after = listing_targets(LISTING, tokens, deep_pages=20)
    targets = Targets(
        {
            "get": [("/container-registry/v1/images/i1", None)],
            "first": [(LISTING, None)],
            "deep": saved,
        },
        after,
    )
    path = tmp_path / "targets.tsv"

    targets.write(path)

    picks, pages = read_file(path)
    assert picks["get"] == ["/container-registry/v1/images/i1"]
    assert "next" not in picks  # reached only by paging on
    # each page once; a first or a saved page leads, page by page, where the tokens lead
    assert len(pages) == 3 * (1 + NEXT_DEPTH)
    for start, number in [(1, picks["first"][0]), (11, picks["deep"][0]), (21, picks["deep"][1])]:
        walked = []
        n = int(number)
        while n:
            walked.append(pages[n][0])
            n = pages[n][1]
        first = (LISTING, None) if start == 1 else (LISTING, tokens[start - 2])
        expected = [request_path(first)] + [
            request_path((LISTING, tokens[p - 2])) for p in range(start + 1, start + 1 + NEXT_DEPTH)
        ]
        assert walked == expected
    assert request_path((LISTING, "tok/2+=")) == LISTING + "&pageToken=tok%2F2%2B%3D"


def test_the_row_is_the_run_of_the_median_rate() -> None:
    def run(requests: int) -> Run:
        outcome = Outcome(seconds=10.0)
        outcome.latencies["get"] = [1.0] * requests
        return Run(outcome, (0.0, 0.0), (0.0, 0.0), None)

    three = [run(30_000), run(10_000), run(20_000)]
    assert median_run(three) is three[2]
    assert rates(three) == "3,000 / 1,000 / 2,000"
    two = [run(20_000), run(10_000)]
    assert median_run(two) is two[1]  # the lower middle: no run is made up


def test_the_rates_a_load_bench_measures(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_bench.rates_arg("max,3200") == [None, 3200.0]
    for bad in ("0", "fast", "max,-5"):
        with pytest.raises(SystemExit):
            load_bench.parse_args(["--rate", bad])
    assert load_bench.main(["--rate", "3000", "--client", "python", "--no-record"]) == 2
    assert "a paced --rate needs --client wrk" in capsys.readouterr().err
    assert load_bench.client_label("wrk", 3200.0) == "wrk, paced: 3,200 requests/s asked"
    assert load_bench.client_label("wrk", None) == "wrk"
