"""Long-running operations: a Delete answers an Operation that is done a little later.

As in the cloud, the Operation is returned at once with ``done: false``; after
``operation_delay`` seconds the image is gone and the Operation is done with
``response`` (google.protobuf.Empty), or with ``error`` when the image was
deleted meanwhile by someone else.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mirror.errors import ApiError, NotFound
from mirror.upstream.simulator.state import SimulatedRegistry
from mirror.upstream.simulator.wire import hash_bytes, id_from_bytes, rfc3339

DELETE_IMAGE_METADATA = "type.googleapis.com/yandex.cloud.containerregistry.v1.DeleteImageMetadata"
EMPTY = "type.googleapis.com/google.protobuf.Empty"
OPERATION_ID_PREFIX = "crp"
OPERATIONS_KEPT = 100_000


@dataclass(slots=True)
class Operation:
    id: str
    description: str
    created_ns: int
    created_by: str
    modified_ns: int
    metadata: dict[str, Any]
    done: bool = False
    error: ApiError | None = None
    response: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The Operation service's JSON; ``done`` is always written, false included."""
        out: dict[str, Any] = {
            "id": self.id,
            "description": self.description,
            "createdAt": rfc3339(self.created_ns),
            "createdBy": self.created_by,
            "modifiedAt": rfc3339(self.modified_ns),
            "done": self.done,
            "metadata": self.metadata,
        }
        if self.error is not None:
            out["error"] = {"code": int(self.error.code), "message": self.error.message}
        elif self.response is not None:
            out["response"] = self.response
        return out


class Operations:
    """Operations by id; completions are timers on the running loop (``close`` cancels them)."""

    def __init__(
        self,
        registry: SimulatedRegistry,
        *,
        rng: random.Random,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._registry = registry
        self._rng = rng
        self._clock = clock
        self._operations: dict[str, Operation] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.created_by = id_from_bytes("aje", hash_bytes(f"{registry.model.seed}:caller"))

    def get(self, operation_id: str) -> Operation | None:
        return self._operations.get(operation_id)

    @property
    def pending(self) -> int:
        return len(self._timers)

    def start_delete(self, image_id: str, delay: float) -> Operation:
        """Begin deleting a live image (``NotFound`` if there is none)."""
        if self._registry.lookup(image_id) is None:
            raise NotFound(f"Image {image_id} not found")
        now = self._clock()
        operation = Operation(
            id=id_from_bytes(OPERATION_ID_PREFIX, self._rng.randbytes(17)),
            description="Delete image",
            created_ns=now,
            created_by=self.created_by,
            modified_ns=now,
            metadata={"@type": DELETE_IMAGE_METADATA, "imageId": image_id},
        )
        if len(self._operations) >= OPERATIONS_KEPT:  # forget the oldest finished ones
            for old_id in [i for i, op in self._operations.items() if op.done][
                : OPERATIONS_KEPT // 10
            ]:
                del self._operations[old_id]
        self._operations[operation.id] = operation
        loop = asyncio.get_running_loop()
        self._timers[operation.id] = loop.call_later(delay, self._complete, operation, image_id)
        return operation

    def _complete(self, operation: Operation, image_id: str) -> None:
        self._timers.pop(operation.id, None)
        try:
            self._registry.delete(image_id)
        except NotFound as exc:
            operation.error = exc
        else:
            operation.response = {"@type": EMPTY}
        operation.done = True
        operation.modified_ns = self._clock()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
