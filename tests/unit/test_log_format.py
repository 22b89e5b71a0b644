"""One log record, one line: what a request carries cannot start a line of its own."""

from __future__ import annotations

import logging

from mirror.log_format import OneLineFormatter, escape_controls


def record(msg: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("mirror.test", logging.INFO, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


def test_controls_are_escaped_and_the_rest_kept() -> None:
    assert escape_controls("plain text, ünïcode €") == "plain text, ünïcode €"
    assert (
        escape_controls("a\nb\r\nc\x00d\x1be\u2028f\x85") == "a\\nb\\r\\nc\\x00d\\x1be\\u2028f\\x85"
    )


def test_a_record_is_one_line_whatever_its_arguments() -> None:
    formatter = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    text = formatter.format(record("request %s -> 404", "/x\nINFO mirror.api.auth: forged"))
    assert text == "INFO mirror.test: request /x\\nINFO mirror.api.auth: forged -> 404"


def test_a_traceback_keeps_its_lines() -> None:
    formatter = OneLineFormatter("%(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        text = formatter.format(record("failed %s", "a\nb", exc_info=sys.exc_info()))
    first, *rest = text.splitlines()
    assert first == "failed a\\nb"
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"
