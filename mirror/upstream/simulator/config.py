"""The simulator's settings: ``SimulatorConfig`` fixed at start, ``Faults`` changeable at run time."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mirror.errors import InvalidArgument
from mirror.upstream.simulator.generator import MAX_IMAGES


class PageTokenStyle(StrEnum):
    OFFSET = "offset"  # the rank of the next image: pages shift when images go mid-walk
    CURSOR = "cursor"  # the last image's id (keyset): stable while images come and go


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """What ``create_simulator_app`` builds: the generated registry and the initial faults."""

    images: int = 10_000
    seed: int = 1
    folders: int = 2
    registries_per_folder: int = 2
    churn: float = 0.0  # changes a second (pushes, tag moves, deletions)
    latency_ms: float = 0.0  # mean added latency of each cloud API request
    latency_sigma: float = 0.5  # spread of the log-normal latency (0: constant)
    error_rate: float = 0.0  # share of requests answered 500/503
    throttle_rate: float = 0.0  # share answered 429 RESOURCE_EXHAUSTED with Retry-After
    retry_after: float = 1.0  # seconds, sent in Retry-After
    drop_rate: float = 0.0  # share whose connection is dropped (no answer or a cut body)
    token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
    page_token_style: PageTokenStyle = PageTokenStyle.OFFSET
    operation_delay: float = 1.0  # seconds until a Delete operation is done
    fault_seed: int | None = None  # seeds the fault draws (None: different on every run)

    def __post_init__(self) -> None:
        if not 1 <= self.images <= MAX_IMAGES:
            raise ValueError(f"images must be between 1 and {MAX_IMAGES:,}, got {self.images}")
        if self.folders < 1 or self.registries_per_folder < 1:
            raise ValueError("folders and registries_per_folder must be at least 1")
        if self.folders * self.registries_per_folder > 10_000:
            raise ValueError("at most 10,000 registries (folders x registries_per_folder)")
        if self.churn < 0:
            raise ValueError(f"churn must not be negative, got {self.churn}")
        Faults.from_config(self)  # validates the fault settings

    def faults(self) -> Faults:
        return Faults.from_config(self)


# Admin API names (camelCase, as the JSON says) of the run-time settings.
_FAULT_FIELDS = {
    "latencyMs": "latency_ms",
    "latencySigma": "latency_sigma",
    "errorRate": "error_rate",
    "throttleRate": "throttle_rate",
    "retryAfter": "retry_after",
    "dropRate": "drop_rate",
    "token": "token",
    "pageTokenStyle": "page_token_style",
    "operationDelay": "operation_delay",
}


@dataclass(slots=True)
class Faults:
    """Fault and behaviour settings read on every request; the admin API changes them."""

    latency_ms: float = 0.0
    latency_sigma: float = 0.5
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: float = 1.0
    drop_rate: float = 0.0
    token: str | None = None
    page_token_style: PageTokenStyle = PageTokenStyle.OFFSET
    operation_delay: float = 1.0

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> Faults:
        faults = cls(
            latency_ms=config.latency_ms,
            latency_sigma=config.latency_sigma,
            error_rate=config.error_rate,
            throttle_rate=config.throttle_rate,
            retry_after=config.retry_after,
            drop_rate=config.drop_rate,
            token=config.token or None,
            page_token_style=PageTokenStyle(config.page_token_style),
            operation_delay=config.operation_delay,
        )
        faults.validate()
        return faults

    def validate(self) -> None:
        for name in ("error_rate", "throttle_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.error_rate + self.throttle_rate + self.drop_rate > 1.0:
            raise ValueError("error_rate + throttle_rate + drop_rate must not exceed 1")
        for name in ("latency_ms", "latency_sigma", "retry_after", "operation_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    def update(self, patch: dict[str, Any]) -> None:
        """Apply an admin PATCH body (camelCase keys); all or nothing."""
        changes: dict[str, Any] = {}
        for key, value in patch.items():
            name = _FAULT_FIELDS.get(key)
            if name is None:
                raise InvalidArgument(
                    f"unknown fault setting {key!r} (known: {', '.join(_FAULT_FIELDS)})"
                )
            changes[name] = _coerce(key, name, value)
        candidate = dataclasses.replace(self, **changes)
        try:
            candidate.validate()
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        for name, value in changes.items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, name in _FAULT_FIELDS.items():
            value = getattr(self, name)
            if name == "token":
                out["tokenRequired"] = value is not None  # the token itself is never shown
                continue
            out[key] = value.value if isinstance(value, PageTokenStyle) else value
        return out


def _coerce(key: str, name: str, value: Any) -> Any:
    if name == "token":
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"{key} must be a string or null")
        return value or None
    if name == "page_token_style":
        try:
            return PageTokenStyle(value)
        except ValueError:
            raise InvalidArgument(f"{key} must be 'offset' or 'cursor'") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{key} must be a number")
    return float(value)
