"""The gRPC listener: the mirror's services, health and reflection, plain or TLS.

``start_grpc_server`` binds ``host:port`` (``0``: any free port), registers
ImageService, OperationService and ApiEndpointService (which answers the
listener's own address, so the SDK's endpoint discovery leads back here), the
standard ``grpc.health.v1`` service (NOT_SERVING while the database is
unreachable, as ``/readyz``; ``health``) and server reflection (``grpcurl`` needs no
.proto files), and starts serving on the running loop: the servicers share the
asyncpg pool and readers of the HTTP API. With ``MIRROR_TLS_CERT`` and
``MIRROR_TLS_KEY`` the port speaks TLS only.
"""

from __future__ import annotations

import functools
import logging
import socket
from dataclasses import dataclass

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from yandex.cloud.containerregistry.v1 import image_service_pb2
from yandex.cloud.endpoint import api_endpoint_service_pb2, api_endpoint_service_pb2_grpc
from yandex.cloud.operation import operation_service_pb2, operation_service_pb2_grpc

from mirror.api.appkeys import DELETES, IMAGES, POOL, SETTINGS
from mirror.api.auth import TokenTable
from mirror.api.health import READINESS, check_ready
from mirror.api.image_list import ImageReader
from mirror.api.operations import DeleteTracker
from mirror.errors import ConfigError
from mirror.grpc_api.calls import Guard
from mirror.grpc_api.health import IndexHealth, Probe
from mirror.grpc_api.metrics import MetricsInterceptor
from mirror.grpc_api.services import (
    ApiEndpointService,
    ImageService,
    OperationService,
    add_image_service,
)
from mirror.grpc_api.wire_cache import ImageWireCache
from mirror.listen import host_port
from mirror.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    image_service_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name,
    operation_service_pb2.DESCRIPTOR.services_by_name["OperationService"].full_name,
    api_endpoint_service_pb2.DESCRIPTOR.services_by_name["ApiEndpointService"].full_name,
)
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
# gRPC sets SO_REUSEPORT by default: a second server would then share a busy port
# silently. Off, a taken port is an error at start, as for the HTTP API.
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)
STOP_GRACE_S = 2.0


@dataclass(slots=True)
class GrpcListener:
    """A started gRPC server and the ``host:port`` clients use (``address``)."""

    server: grpc.aio.Server
    address: str
    tls: bool
    health: IndexHealth

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        await self.health.stop()
        await self.server.stop(grace)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from ``MIRROR_TLS_CERT``/``MIRROR_TLS_KEY``, or None for plain gRPC."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
    except OSError as exc:
        raise ConfigError(f"MIRROR_TLS_CERT/MIRROR_TLS_KEY: cannot read ({exc.strerror})") from None
    return grpc.ssl_server_credentials([pair])


async def start_grpc_server(
    settings: Settings,
    images: ImageReader,
    deletes: DeleteTracker,
    *,
    host: str,
    port: int,
    probe: Probe | None = None,
) -> GrpcListener:
    """Bind and start the gRPC API; ``ConfigError`` when the port cannot be taken.

    ``probe`` (``check_ready`` of the HTTP API) drives the health service; None: always SERVING.
    """
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=(MetricsInterceptor(),))
    credentials = server_credentials(settings)
    bind = host_port(host, port)
    try:
        if credentials is None:
            bound = server.add_insecure_port(bind)
        else:
            bound = server.add_secure_port(bind, credentials)
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"--grpc-port {port}: cannot listen on {bind}")
    address = advertised_address(host, bound)
    guard = Guard(TokenTable(settings.api_tokens) if settings.api_tokens else None)
    cache = ImageWireCache(settings.grpc_image_cache_mb * 1024 * 1024)
    add_image_service(ImageService(images, deletes, guard, cache), server)
    operation_service_pb2_grpc.add_OperationServiceServicer_to_server(
        OperationService(deletes, guard), server
    )
    api_endpoint_service_pb2_grpc.add_ApiEndpointServiceServicer_to_server(
        ApiEndpointService(address), server
    )
    health_servicer = IndexHealth(probe, follow=SERVICE_NAMES[:2], always=SERVICE_NAMES[2:])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.start()
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    await server.start()
    log.info("gRPC API listening on %s%s", address, " (TLS)" if credentials else "")
    return GrpcListener(server, address, credentials is not None, health_servicer)


def advertised_address(host: str, port: int) -> str:
    """``host:port`` as clients reach it: a wildcard bind is named by this machine's name."""
    shown = socket.gethostname() if host in WILDCARD_HOSTS else host
    return host_port(shown, port)


async def start_for_app(app: web.Application, host: str) -> GrpcListener | None:
    """The gRPC API beside a set-up HTTP API app, on its readers; None when ``grpc_port`` is off."""
    settings = app[SETTINGS]
    if settings.grpc_port is None:
        return None
    return await start_grpc_server(
        settings,
        app[IMAGES],
        app[DELETES],
        host=host,
        port=settings.grpc_port,
        probe=functools.partial(check_ready, app[POOL], app[READINESS]),
    )
