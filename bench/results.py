"""Writing a bench's rows into ``bench/RESULTS.md``: one section a bench, older rows kept."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def append_to_section(
    section: str,
    header: str,
    rows: Sequence[str],
    results: Path = RESULTS,
    *,
    under: str | None = None,
) -> None:
    """Add ``rows`` to a table of ``section`` (its ``## `` line), after the table's last row.

    The section is the line that is exactly ``section`` (prose elsewhere may name
    it). The table is the section's last whose header line is ``under`` (a section may
    hold other tables after it: comparisons written by hand), else the section's last;
    a section without a table gets the rows at its end. A missing section is added at
    the end of the file as ``header`` (which starts with the section line).
    """
    lines = _lines(results)
    if section not in lines:
        _write(results, [*_trimmed(lines), "", *header.rstrip("\n").split("\n"), *rows])
        return
    start, end = _bounds(lines, section)
    table = [i for i in range(start + 1, end) if lines[i].startswith("|")]
    headers = [i for i in range(start + 1, end) if lines[i] == under]
    if headers:
        at = headers[-1] + 1
        while at < end and lines[at].startswith("|"):
            at += 1
    elif table:
        at = table[-1] + 1
    else:
        at = start + 1 + len(_trimmed(lines[start + 1 : end]))
    lines[at:at] = rows
    _write(results, lines)


def append_block(section: str, intro: str, block: Sequence[str], results: Path = RESULTS) -> None:
    """Add ``block`` (lines: a heading, a table...) at the end of ``section``, after a
    blank line; a missing section is added at the end of the file as ``intro``."""
    lines = _lines(results)
    if section not in lines:
        lines = [*_trimmed(lines), "", *intro.rstrip("\n").split("\n")]
    start, end = _bounds(lines, section)
    at = start + 1 + len(_trimmed(lines[start + 1 : end]))
    lines[at:at] = ["", *block]
    _write(results, lines)


def _lines(results: Path) -> list[str]:
    return (results.read_text() if results.exists() else "# Benchmark results\n").splitlines()


def _bounds(lines: list[str], section: str) -> tuple[int, int]:
    """The indexes of the section's line and of the next section's (or the end)."""
    start = lines.index(section)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, end


def _trimmed(lines: list[str]) -> list[str]:
    """``lines`` without the blank lines at their end."""
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    return lines[:end]


def _write(results: Path, lines: list[str]) -> None:
    results.write_text("\n".join(lines) + "\n")
