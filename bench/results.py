"""Writing a bench's rows into ``bench/RESULTS.md``: one section a bench, older rows kept."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def append_to_section(
    section: str, header: str, rows: Sequence[str], results: Path = RESULTS
) -> None:
    """Append ``rows`` at the end of ``section`` (a ``## `` line); a missing section is
    added at the end of the file as ``header`` (which starts with the section line)."""
    block = "".join(row + "\n" for row in rows)
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if section not in text:
        text = text.rstrip("\n") + "\n\n" + header + block
    else:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        end = len(text) if end == -1 else end + 1
        part = text[start:end].rstrip("\n") + "\n" + block
        text = text[:start] + part + ("\n" + text[end:] if end < len(text) else "")
    results.write_text(text)
