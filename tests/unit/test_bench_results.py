"""bench/results.py: a bench's rows go at the end of its own section; older rows stay."""

from __future__ import annotations

from pathlib import Path

from bench.results import append_block, append_to_section


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


def test_rows_go_under_the_table_of_the_section_line_not_prose_naming_it(tmp_path: Path) -> None:
    """Prose may name another section ("see ## A"); rows join the table of the line
    ``## A``, right after its last row, even when paragraphs follow the table."""
    results = tmp_path / "RESULTS.md"
    results.write_text(
        '# B\n\n## Z\n\nsee "## A", above\n\n## A\n\n| x |\n| 1 |\n\nwhy 1\n\n## C\n'
    )
    append_to_section("## A", "## A\n\n| x |\n", ["| 2 |"], results)
    assert results.read_text() == (
        '# B\n\n## Z\n\nsee "## A", above\n\n## A\n\n| x |\n| 1 |\n| 2 |\n\nwhy 1\n\n## C\n'
    )


def test_rows_go_under_the_named_table_and_blocks_at_the_section_end(tmp_path: Path) -> None:
    """``under`` picks a table of the section (the ingest bench's results, not its
    profile table); ``append_block`` adds a run's own table after the section's text."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# B\n\n## A\n\n| r |\n| 1 |\n\ntext\n\n| p |\n| 9 |\n\n## C\n\nc\n")
    append_to_section("## A", "## A\n\n| r |\n", ["| 2 |"], results, under="| r |")
    append_block("## C", "## C\n", ["### run", "", "| w |", "| 3 |"], results)
    append_block("## D", "## D\n\nintro\n", ["### run", "| w |"], results)
    assert results.read_text() == (
        "# B\n\n## A\n\n| r |\n| 1 |\n| 2 |\n\ntext\n\n| p |\n| 9 |\n\n"
        "## C\n\nc\n\n### run\n\n| w |\n| 3 |\n\n## D\n\nintro\n\n### run\n| w |\n"
    )


def test_rows_go_under_the_last_table_of_that_header_not_a_comparison_after_it(
    tmp_path: Path,
) -> None:
    """A section may repeat its table (rows added below a newer paragraph) and end with a
    table written by hand: rows join the last table whose header is ``under``."""
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# B\n\n## A\n\n| r |\n| 1 |\n\nlater\n\n| r |\n| 2 |\n\npair\n\n| side |\n| x |\n"
    )
    append_to_section("## A", "## A\n\n| r |\n", ["| 3 |"], results, under="| r |")
    assert results.read_text() == (
        "# B\n\n## A\n\n| r |\n| 1 |\n\nlater\n\n| r |\n| 2 |\n| 3 |\n\npair\n\n| side |\n| x |\n"
    )
