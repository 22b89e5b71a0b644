"""The one signal rule of every entry point (mirror/signals.py): the first SIGINT or
SIGTERM asks for a graceful stop, a second one stops at once with exit status 130."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from mirror.exit_codes import ExitCode
from mirror.signals import Signalled, run_main, stop_on_signals


def test_the_first_signal_sets_stop_and_a_second_exits_130() -> None:
    seen: list[Signalled] = []
    reached: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        with stop_on_signals(stop) as signalled:
            seen.append(signalled)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stop.wait(), timeout=10)
            reached.append("graceful stop")
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(30)  # the second signal cancels this
            reached.append("not cancelled")

    with pytest.raises(SystemExit) as exited:
        run_main(main())
    assert exited.value.code == ExitCode.INTERRUPTED == 130
    assert reached == ["graceful stop"]
    assert seen[0].first is signal.SIGTERM and seen[0].by == "SIGTERM"


def test_ctrl_c_is_named_as_the_user_typed_it() -> None:
    async def main() -> Signalled:
        stop = asyncio.Event()
        with stop_on_signals(stop) as signalled:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.wait_for(stop.wait(), timeout=10)
        return signalled

    signalled = run_main(main())
    assert signalled.first is signal.SIGINT and signalled.by == "Ctrl-C"


def test_the_handlers_are_removed_on_leaving() -> None:
    async def main() -> bool:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            pass
        loop = asyncio.get_running_loop()
        return loop.remove_signal_handler(signal.SIGTERM)  # False: none was left installed

    assert run_main(main()) is False
