"""Stopping a command on a signal, the same way for every entry point.

The first SIGINT (Ctrl-C) or SIGTERM sets the command's ``stop`` event: a graceful
stop (the current page transaction, publish batch or request finishes). A second
one cancels the main task: the cleanups still run (so the embedded PostgreSQL is
stopped), but without the grace period, and the process exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from mirror.exit_codes import ExitCode

log = logging.getLogger(__name__)

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(slots=True)
class Signalled:
    """Which signal asked the command to stop, if any (for a truthful last line)."""

    first: signal.Signals | None = None

    @property
    def by(self) -> str:
        """``Ctrl-C`` for SIGINT, the signal's name otherwise."""
        if self.first is None:
            return "a stop request"
        return "Ctrl-C" if self.first is signal.SIGINT else self.first.name


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[Signalled]:
    """SIGINT/SIGTERM set ``stop``; one more (once ``stop`` is set) cancels the main task.

    Enter it in the command's main coroutine (the task ``run_main`` runs).
    Outside the main thread, or where the loop has no signal handlers, it does nothing.
    """
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    received = Signalled()

    def handle(sig: signal.Signals) -> None:
        if not stop.is_set():
            received.first = received.first or sig
            log.info("%s: stopping (again to stop at once)", sig.name)
            stop.set()
        elif main is not None:
            log.warning("%s again: stopping at once", sig.name)
            main.cancel()

    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, handle, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        yield received
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_main(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for an entry point: interrupted at once (a second signal, or
    Ctrl-C before the handlers are in place), the process exits 130 without a traceback."""
    try:
        return asyncio.run(coro)
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(ExitCode.INTERRUPTED)
