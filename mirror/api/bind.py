"""Where an open API may listen: without ``MIRROR_API_TOKENS``, loopback only.

Anyone who can reach an open API can list the registry and delete images
through it, so a non-loopback address needs tokens, or ``--insecure`` to say
that this is intended (a private network, a sidecar). Host names other than
``localhost`` are not resolved: they count as non-loopback.
"""

from __future__ import annotations

import ipaddress

from mirror.errors import ConfigError
from mirror.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str, insecure: bool) -> None:
    """Raise ``ConfigError`` (one line) for an open API on a non-loopback address."""
    if settings.api_tokens or insecure or is_loopback(host):
        return
    raise ConfigError(
        f"--host {host}: without MIRROR_API_TOKENS the API binds to loopback only "
        "(set MIRROR_API_TOKENS, or pass --insecure to serve an open API on this address)"
    )
