"""Opening an aiohttp site on host:port and the URL it is reachable at (an IPv6 host in brackets)."""

from __future__ import annotations

import ssl

from aiohttp import web

from mirror.errors import ConfigError


def host_for_url(host: str) -> str:
    """``::1`` → ``[::1]``; names and IPv4 addresses unchanged."""
    return f"[{host}]" if ":" in host else host


async def start_site(
    runner: web.BaseRunner,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
) -> str:
    """Listen on ``host:port`` (0: any free port) with a set-up ``runner``; the site's URL.

    ``reuse_port``: with ``SO_REUSEPORT``, so that other processes of this user listening
    the same way share the port (``mirror serve --workers``). A port that cannot be bound
    (in use, not permitted) is a ConfigError naming --port.
    """
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        raise ConfigError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
    bound_host, bound_port = runner.addresses[0][:2]
    scheme = "https" if ssl_context is not None else "http"
    return f"{scheme}://{host_for_url(bound_host)}:{bound_port}"


def host_port(host: str, port: int) -> str:
    """``host:port`` as a gRPC bind or address wants it (``[::1]:50051``)."""
    return f"{host_for_url(host)}:{port}"
