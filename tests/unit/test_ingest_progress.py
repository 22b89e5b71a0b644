"""Walk progress: shown on a terminal only; the display survives scopes growing past their ETA."""

from __future__ import annotations

import io

from mirror.ingest.progress import NullProgress, TerminalProgress, progress_for


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    assert progress_for(io.StringIO()) is None
    assert isinstance(progress_for(Tty()), TerminalProgress)
    NullProgress().start("folder:f", 10)  # does nothing, raises nothing


def test_terminal_progress_counts_pages_and_images() -> None:
    stream = Tty()
    with TerminalProgress(stream) as progress:
        progress.start("folder:f1", 1500)
        progress.advance("folder:f1", 1000)
        progress.advance("folder:f1", 1000)  # more than the last walk saw: no ETA, no crash
        progress.start("registry:r", None)
        progress.advance("registry:r", 10)
        progress.finish("folder:f1", "complete")
        progress.finish("registry:r", "failed")
        tasks = {t.description: t for t in progress._progress.tasks}
    assert tasks["folder:f1 [complete]"].completed == 2000
    assert tasks["registry:r [failed]"].completed == 10
    assert "folder:f1" in stream.getvalue()
