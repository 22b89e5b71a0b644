"""Prometheus metrics of the gRPC API, beside the HTTP API's on ``/metrics``.

``mirror_grpc_request_duration_seconds{service, method, code}``: every unary
call's latency (the servicer's time: the request parsed to the answer made), by
its gRPC status code name (``OK``, ``NOT_FOUND``, …); its ``_count`` is the
number of calls. Streaming calls (health ``Watch``, reflection) are not timed:
they last as long as the client keeps them. The metrics live in
prometheus_client's default registry, which ``/metrics`` exposes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Histogram

from mirror.api.metrics import LATENCY_BUCKETS

GRPC_REQUEST_SECONDS = Histogram(
    "mirror_grpc_request_duration_seconds",
    "gRPC API call latency by service, method and status code.",
    ("service", "method", "code"),
    buckets=LATENCY_BUCKETS,  # the HTTP API's, so the two compare
)

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def code_name(code: Any) -> str:
    """A status code (``grpc.StatusCode``, its number, or None: none set) by its name."""
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODE_NAMES.get(code, "UNKNOWN")


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times every unary call into ``GRPC_REQUEST_SECONDS``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        path: str = handler_call_details.method  # type: ignore[attr-defined]
        service, _, method = path.lstrip("/").rpartition("/")
        inner = handler.unary_unary

        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                answer = await inner(request, context)
                code = code_name(context.code())
                return answer
            except BaseException:
                code = code_name(context.code() or grpc.StatusCode.UNKNOWN)
                raise
            finally:
                GRPC_REQUEST_SECONDS.labels(service, method, code).observe(
                    time.perf_counter() - started
                )

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
