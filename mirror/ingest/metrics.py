"""Prometheus metrics of the ingest, in the default registry (``/metrics`` exposes them)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PAGES = Counter("mirror_ingest_pages", "List pages merged into the index", ["scope"])
IMAGES = Counter("mirror_ingest_images", "Images read from the upstream", ["scope"])
CHANGES = Counter(
    "mirror_ingest_changes",
    "Index changes written by the ingest",
    ["kind"],  # created, updated, deleted, blob_added, blob_orphaned
)
ANOMALIES = Counter(
    "mirror_ingest_paging_anomalies",
    "Images missing from a walk that still exist upstream",
    ["scope"],
)
ERRORS = Counter("mirror_ingest_errors", "Failed walks and failed deletion checks", ["scope"])
WALKS = Counter("mirror_ingest_walks", "Scope walks by outcome", ["scope", "status"])
WALK_SECONDS = Gauge(
    "mirror_ingest_last_walk_duration_seconds", "Duration of the last complete walk", ["scope"]
)
LAST_COMPLETE = Gauge(
    "mirror_ingest_last_complete_timestamp_seconds",
    "Unix time of the last complete walk",
    ["scope"],
)

_last_complete: dict[str, float] = {}


def walk_completed(scope: str, seconds: float) -> None:
    now = time.time()
    _last_complete[scope] = now
    LAST_COMPLETE.labels(scope).set(now)
    WALK_SECONDS.labels(scope).set(seconds)


class _LagCollector(Collector):
    """Seconds since each scope's last complete walk, computed at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "mirror_ingest_lag_seconds",
            "Seconds since the scope's last complete walk (by this process)",
            labels=["scope"],
        )
        now = time.time()
        for scope, at in sorted(_last_complete.items()):
            family.add_metric([scope], now - at)
        yield family


REGISTRY.register(_LagCollector())
