"""One log record, one line: control characters in a message are escaped.

Log messages carry text from outside (request paths, ids, error messages that
quote a parameter); a decoded ``%0a`` in it must not start a line that looks
like a record of its own. ``OneLineFormatter`` escapes every non-printable
character of the formatted message (``\\n`` becomes ``\\\\n``, a NUL ``\\\\x00``);
a traceback, appended after the message, keeps its own lines.
"""

from __future__ import annotations

import logging


def escape_controls(text: str) -> str:
    """``text`` with every non-printable character written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)


class OneLineFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose message part never spans more than one line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))
