"""The project's errors, one hierarchy.

    MirrorError
    ├── ConfigError              bad settings; the CLI prints its one line and exits 2
    ├── DatabaseUnavailable      PostgreSQL refused or could not be reached; one line, exit 3
    ├── DataDirBusy              another `mirror run`/`demo` owns the embedded data dir; exit 4
    ├── MigrationError           a migration file is malformed or failed to apply
    ├── IndexUnavailable         a read command found no index there, or its schema behind
    ├── ApiError                 carries a gRPC status code; rendered as the upstream's error JSON
    │   ├── InvalidArgument      400
    │   ├── Unauthenticated      401
    │   ├── PermissionDenied     403
    │   ├── NotFound             404
    │   ├── AlreadyExists        409
    │   ├── FailedPrecondition   400
    │   ├── ResourceExhausted    429
    │   │   └── Throttled        429 with Retry-After (the simulator's throttling)
    │   ├── Internal             500
    │   ├── Unimplemented        501
    │   ├── Unavailable          503
    │   └── DeadlineExceeded     504
    ├── UpstreamError            the upstream failed in a way retries did not cure
    │   ├── UpstreamStatusError  it answered with an error status (keeps its ApiError)
    │   └── MalformedAnswer      it answered something not well-formed (never evidence)
    ├── MalformedImage           an upstream image the index cannot hold (also a ValueError)
    ├── LeaseLost                another walker took the scope over
    ├── BackgroundTaskFailed     `mirror run`/`demo`: the ingest loop or the relay died; exit 1
    ├── KafkaUnavailableError    Kafka unreachable, or it refused to create the topics
    ├── KafkaBrokerError         the local development broker could not be set up or started
    ├── EnvelopeError            a Kafka record is not a binary-mode CloudEvent (also a ValueError)
    └── PayloadMissing           an outbox row's derived payload cannot be built (sql/100 bypassed)

Low-level errors (asyncpg, aiohttp, aiokafka) are translated at the edge with
``raise ... from exc``; the API middleware turns any ``ApiError`` into
``{"code", "message", "details"}`` with the cloud's HTTP status.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any, ClassVar


class GrpcCode(IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# The cloud's HTTP status for each gRPC code (the gRPC-gateway mapping).
HTTP_STATUS: dict[GrpcCode, int] = {
    GrpcCode.OK: 200,
    GrpcCode.CANCELLED: 499,
    GrpcCode.UNKNOWN: 500,
    GrpcCode.INVALID_ARGUMENT: 400,
    GrpcCode.DEADLINE_EXCEEDED: 504,
    GrpcCode.NOT_FOUND: 404,
    GrpcCode.ALREADY_EXISTS: 409,
    GrpcCode.PERMISSION_DENIED: 403,
    GrpcCode.RESOURCE_EXHAUSTED: 429,
    GrpcCode.FAILED_PRECONDITION: 400,
    GrpcCode.ABORTED: 409,
    GrpcCode.OUT_OF_RANGE: 400,
    GrpcCode.UNIMPLEMENTED: 501,
    GrpcCode.INTERNAL: 500,
    GrpcCode.UNAVAILABLE: 503,
    GrpcCode.DATA_LOSS: 500,
    GrpcCode.UNAUTHENTICATED: 401,
}

REQUEST_INFO_TYPE = "type.googleapis.com/google.rpc.RequestInfo"


class MirrorError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(MirrorError):
    """A setting is missing or malformed. The message names the setting, never its secret value."""


class DatabaseUnavailable(MirrorError):
    """PostgreSQL could not be reached, refused the login, or went away.

    The message names host, port, database and user, never the password.
    """


class DataDirBusy(MirrorError):
    """Another process owns the embedded PostgreSQL's data dir (``mirror run`` or ``demo``)."""


class ApiError(MirrorError):
    """An error with a gRPC status code, as the upstream reports it."""

    code: ClassVar[GrpcCode] = GrpcCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_json(self, request_id: str) -> dict[str, Any]:
        """The upstream's error body."""
        return {
            "code": int(self.code),
            "message": self.message,
            "details": [{"@type": REQUEST_INFO_TYPE, "requestId": request_id}],
        }

    @staticmethod
    def from_code(code: int, message: str) -> ApiError:
        """The ApiError subclass for a numeric gRPC code (unknown codes become Unknown)."""
        cls = _BY_CODE.get(code, ApiError)
        return cls(message)


class InvalidArgument(ApiError):
    code = GrpcCode.INVALID_ARGUMENT


class Unauthenticated(ApiError):
    code = GrpcCode.UNAUTHENTICATED


class PermissionDenied(ApiError):
    code = GrpcCode.PERMISSION_DENIED


class NotFound(ApiError):
    code = GrpcCode.NOT_FOUND


class AlreadyExists(ApiError):
    code = GrpcCode.ALREADY_EXISTS


class FailedPrecondition(ApiError):
    code = GrpcCode.FAILED_PRECONDITION


class ResourceExhausted(ApiError):
    code = GrpcCode.RESOURCE_EXHAUSTED


class Throttled(ResourceExhausted):
    """429 with a ``Retry-After`` (seconds) the error middleware sends as a header."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many requests: the quota of requests per second is exceeded")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(0, math.ceil(self.retry_after)))}


class Internal(ApiError):
    code = GrpcCode.INTERNAL


class Unimplemented(ApiError):
    code = GrpcCode.UNIMPLEMENTED


class Unavailable(ApiError):
    code = GrpcCode.UNAVAILABLE


class DeadlineExceeded(ApiError):
    code = GrpcCode.DEADLINE_EXCEEDED


_BY_CODE: dict[int, type[ApiError]] = {
    int(cls.code): cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Internal,
        Unimplemented,
        Unavailable,
        DeadlineExceeded,
    )
}


class UpstreamError(MirrorError):
    """The upstream could not be reached or kept failing after retries."""


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error; ``error`` is that error as an ApiError.

    ``from_api`` says the body was the API's own error JSON (``{"code", "message",
    "details"}`` as application/json); without it the code was guessed from the
    HTTP status (a proxy's or load balancer's page) and proves nothing.
    """

    def __init__(
        self, error: ApiError, http_status: int, *, from_api: bool = False, request_id: str = ""
    ) -> None:
        where = f" (request id {request_id})" if request_id else ""
        super().__init__(f"upstream answered {http_status}: {error.message}{where}")
        self.error = error
        self.http_status = http_status
        self.from_api = from_api
        self.request_id = request_id

    @property
    def not_found(self) -> bool:
        """The upstream itself said NOT_FOUND: HTTP 404 with its JSON error, code 5."""
        return self.from_api and self.http_status == 404 and self.error.code == GrpcCode.NOT_FOUND


class MalformedAnswer(UpstreamError):
    """The upstream answered something that is not a well-formed message: never evidence.

    The message names the field that is wrong; ``request_id`` is the request's id.
    """

    def __init__(self, message: str, *, request_id: str = "") -> None:
        super().__init__(
            f"upstream answer malformed: {message}"
            + (f" (request id {request_id})" if request_id else "")
        )
        self.request_id = request_id


class MigrationError(MirrorError):
    """A migration file is malformed or failed to apply."""


class IndexUnavailable(MirrorError):
    """No index where a read-only command looked (``missing``), or one whose schema is
    behind the code."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


class MalformedImage(MirrorError, ValueError):
    """An image object the upstream sent that cannot be indexed (no id, bad size…)."""


class LeaseLost(MirrorError):
    """Another walker took the scope over (this one stalled past its lease)."""


class BackgroundTaskFailed(MirrorError):
    """The ingest loop or the relay of ``mirror run``/``demo`` died with an unexpected
    error (the cause is chained); the command prints one line and exits 1."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the {name} failed")
        self.name = name


class KafkaUnavailableError(MirrorError):
    """Kafka could not be reached, or refused to create the topics."""


class KafkaBrokerError(MirrorError):
    """The local Kafka broker could not be resolved, formatted, started or probed."""


class EnvelopeError(MirrorError, ValueError):
    """A Kafka record is not a CloudEvent in binary mode (a required attribute is missing)."""


class PayloadMissing(MirrorError):
    """An outbox row has no payload to publish: a derived one whose image is gone
    without its payload written out (sql/100's triggers were bypassed)."""
