"""bench/results.py: a bench's rows go at the end of its own section; older rows stay."""

from __future__ import annotations

from pathlib import Path

from bench.results import append_to_section


def test_rows_join_their_section_and_a_new_section_goes_last(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# B\n\n## A\n\n| x |\n| 1 |\n\n## C\n\ntext\n")
    append_to_section("## A", "## A\n\n| x |\n", ["| 2 |"], results)
    append_to_section("## D", "## D\n\n| y |\n", ["| 3 |", "| 4 |"], results)
    assert results.read_text() == (
        "# B\n\n## A\n\n| x |\n| 1 |\n| 2 |\n\n## C\n\ntext\n\n## D\n\n| y |\n| 3 |\n| 4 |\n"
    )


def test_a_missing_file_starts_with_the_title(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    append_to_section("## A", "## A\n\n| x |\n", ["| 1 |"], results)
    assert results.read_text() == "# Benchmark results\n\n## A\n\n| x |\n| 1 |\n"
