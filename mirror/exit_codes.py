"""The process exit statuses every `mirror` command shares (docs/INGEST.md lists them)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the work failed (a scope's walk, a background task)
    CONFIG = 2  # a setting or flag is malformed; nothing was started
    DATABASE = 3  # PostgreSQL could not be reached, refused the login, or went away
    HELD_ELSEWHERE = 4  # another process holds it: a scope's lease, the embedded data dir
    CANCELLED = 5  # a signal (SIGTERM, Ctrl-C) stopped the work before it was done
    INTERRUPTED = 130  # a second Ctrl-C: stopped at once
