"""An open API (no tokens) listens on loopback only, unless --insecure."""

from __future__ import annotations

import pytest

from mirror.api.bind import check_bind, is_loopback
from mirror.errors import ConfigError
from mirror.settings import Settings

OPEN = Settings.load(env={})
WITH_TOKENS = Settings.load(env={"MIRROR_API_TOKENS": "t:read"})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback(host: str) -> None:
    assert is_loopback(host)
    check_bind(OPEN, host, insecure=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "example.com", "myhost"])
def test_open_api_refuses_other_addresses_in_one_line(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError) as info:
        check_bind(OPEN, host, insecure=False)
    message = str(info.value)
    assert "\n" not in message and "MIRROR_API_TOKENS" in message and "--insecure" in message


def test_tokens_or_insecure_allow_any_address() -> None:
    check_bind(WITH_TOKENS, "0.0.0.0", insecure=False)
    check_bind(OPEN, "0.0.0.0", insecure=True)
