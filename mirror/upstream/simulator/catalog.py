"""What generated registries are made of: popular base stacks and the words of repository names.

A base stack is a parent's layers plus its own, like ``python:3.12`` is
``buildpack-deps`` plus a few layers, which is ``debian`` plus a few more.
A few stacks are very popular, so the same base layers appear in many
repositories, registries and folders, as they do in a real cloud.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20
KB = 1 << 10


@dataclass(frozen=True, slots=True)
class Stack:
    name: str
    parent: str | None
    layers: tuple[int, ...]  # median size in bytes of each own layer
    popularity: float


STACKS: tuple[Stack, ...] = (
    Stack("alpine", None, (3 * MB + 400 * KB,), 6.0),
    Stack("debian", None, (29 * MB,), 5.0),
    Stack("ubuntu", None, (28 * MB + 500 * KB,), 4.0),
    Stack("ubi", None, (78 * MB, 12 * MB), 0.7),
    Stack("distroless-static", None, (800 * KB, 90 * KB), 1.5),
    Stack("distroless-base", "distroless-static", (2 * MB + 300 * KB, 7 * KB), 1.5),
    Stack("buildpack-deps", "debian", (17 * MB, 55 * MB), 1.0),
    Stack("python", "buildpack-deps", (6 * MB, 21 * MB, 250, 2 * MB + 700 * KB), 4.0),
    Stack("python-slim", "debian", (3 * MB + 300 * KB, 12 * MB, 240, 3 * MB), 5.0),
    Stack("python-alpine", "alpine", (600 * KB, 11 * MB, 240, 2 * MB + 800 * KB), 2.0),
    Stack("node", "buildpack-deps", (4 * MB, 48 * MB, 2 * MB, 450), 3.5),
    Stack("node-alpine", "alpine", (41 * MB, 2 * MB + 600 * KB, 450), 3.0),
    Stack("golang", "buildpack-deps", (82 * MB, 126), 2.5),
    Stack("golang-alpine", "alpine", (290 * KB, 69 * MB, 155), 1.5),
    Stack("eclipse-temurin", "ubuntu", (17 * MB, 47 * MB, 160, 2 * KB), 2.5),
    Stack("openjdk", "ubuntu", (15 * MB, 190 * MB), 1.0),
    Stack("nginx", "debian", (26 * MB, 627, 956, 405, 1 * KB + 200, 1 * KB + 400), 3.0),
    Stack("nginx-alpine", "alpine", (11 * MB, 628, 957, 406, 1 * KB + 200), 2.0),
    Stack("dotnet-runtime", "debian", (15 * MB, 30 * MB, 8 * MB), 1.2),
    Stack("ruby", "buildpack-deps", (200, 30 * MB, 150), 0.8),
    Stack("php-fpm", "debian", (89 * MB, 230, 3 * MB, 12 * MB, 490), 0.8),
    Stack("postgres", "debian", (4 * MB, 1 * MB + 300 * KB, 8 * MB, 97 * MB, 9 * KB), 1.0),
    Stack("redis", "debian", (1 * MB, 2 * MB, 12 * MB, 98, 413), 1.0),
    Stack("cuda", "ubuntu", (4 * MB + 600 * KB, 57 * MB, 180, 1 * KB, 1600 * MB, 700 * MB), 0.6),
    Stack("pytorch", "cuda", (3 * MB, 2300 * MB, 180 * MB), 0.5),
)

STACK_VERSIONS = 4  # each stack has this many releases; repositories move to newer ones over time

TEAMS = (
    "platform", "payments", "search", "ml", "data", "infra", "billing", "identity",
    "growth", "mobile", "web", "core", "security", "analytics", "ads", "maps",
    "delivery", "catalog", "checkout", "support", "devtools", "sre", "media", "video",
)  # fmt: skip

SERVICES = (
    "api", "gateway", "worker", "scheduler", "frontend", "backend", "auth", "users",
    "orders", "cart", "inventory", "notifier", "mailer", "indexer", "crawler", "ranker",
    "recommender", "feature-store", "trainer", "inference", "etl", "ingest", "exporter",
    "reporter", "dashboard", "proxy", "cache", "queue", "router", "resizer", "transcoder",
    "uploader", "billing-engine", "ledger", "fraud-check", "geo", "tiles", "pricing",
    "promo", "audit", "config", "migrator", "cron", "operator", "agent", "collector",
)  # fmt: skip

SUFFIXES = ("service", "svc", "app", "job", "daemon", "v2", "next", "legacy", "lite", "batch")

ENVIRONMENTS = ("prod", "staging", "dev", "test", "sandbox")

VARIANTS = ("slim", "alpine", "debug", "amd64", "arm64")
