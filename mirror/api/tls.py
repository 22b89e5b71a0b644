"""TLS for the HTTP API from ``MIRROR_TLS_CERT``/``MIRROR_TLS_KEY`` (the gRPC listener takes the same pair)."""

from __future__ import annotations

import ssl

from mirror.errors import ConfigError
from mirror.settings import Settings


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A server context for the certificate pair, or None when no TLS is configured."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"MIRROR_TLS_CERT/MIRROR_TLS_KEY: not a usable certificate and key ({exc})"
        ) from None
    return context
