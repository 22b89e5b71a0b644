"""The Kafka side of the relay: the producer's settings and the topics it writes.

aiokafka is confined to this module, ``relay.py`` and ``subscriber.py``; its
errors are translated to ``KafkaUnavailableError`` here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from mirror.errors import ConfigError, KafkaUnavailableError
from mirror.events.envelope import kafka_topic
from mirror.model import EventType
from mirror.settings import Settings

log = logging.getLogger(__name__)

TOPICS = tuple(sorted({t.topic for t in EventType}))  # ("blobs", "images", "tags")
LINGER_MS = 5
# Large batches: an image event is ~1 KB and a relay batch holds a thousand of them.
MAX_BATCH_BYTES = 1 << 20
REQUEST_TIMEOUT_MS = 30_000
# aiokafka retries a failed send every retry_backoff_ms (forever, being idempotent):
# a quarter second keeps a Kafka outage from flooding the log and the network.
RETRY_BACKOFF_MS = 250
CLIENT_ID = "registry-mirror-relay"


_CODECS = {"zstd": has_zstd, "gzip": has_gzip, "lz4": has_lz4, "snappy": has_snappy}


def compression_type(setting: str = "zstd") -> str | None:
    """The producer's ``compression_type`` for ``MIRROR_KAFKA_COMPRESSION`` (None: ``none``).

    zstd, lz4 and snappy come from the optional ``cramjam`` package
    (``aiokafka[zstd]``, a dependency of the mirror); gzip from the standard library,
    though aiokafka compresses it at level 9: ~35 µs of the relay's single thread per
    1 KB event (zstd: ~4 µs, and smaller output; lz4: ~10 µs, larger output).
    Consumers need the same codec: see the README's table. A codec that is not
    installed is a ``ConfigError`` at start, never a silent fallback.
    """
    if setting == "none":
        return None
    available = _CODECS.get(setting)
    if available is None:
        raise ConfigError(f"MIRROR_KAFKA_COMPRESSION: unknown codec {setting!r}")
    if not available():
        raise ConfigError(
            f"MIRROR_KAFKA_COMPRESSION={setting}: its codec is not installed "
            "(pip install 'aiokafka[zstd]' brings zstd, lz4 and snappy)"
        )
    return setting


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int

    @property
    def configs(self) -> dict[str, str]:
        # acks=all waits for the in-sync replicas; with replicas to spare, insist on
        # two of them so an acknowledged event survives the loss of one broker.
        if self.replication > 1:
            return {"min.insync.replicas": str(min(2, self.replication))}
        return {}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """``<prefix>.blobs``, ``.images`` and ``.tags`` with the configured partitions and replicas."""
    return [
        TopicSpec(
            kafka_topic(settings.kafka_topic_prefix, suffix),
            settings.kafka_partitions,
            settings.kafka_replication,
        )
        for suffix in TOPICS
    ]


def create_producer(bootstrap: str, compression: str = "zstd") -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (not started yet).

    Idempotence keeps a retried batch from being written twice or out of order
    within a partition; aiokafka then retries a failed send until it succeeds.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        enable_idempotence=True,
        acks="all",
        compression_type=compression_type(compression),
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        max_request_size=MAX_BATCH_BYTES + (64 << 10),
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        retry_backoff_ms=RETRY_BACKOFF_MS,
    )


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication, topic_configs=s.configs)
                for s in missing
            ],
            timeout_ms=REQUEST_TIMEOUT_MS,
        )
        created = []
        for name, code, *rest in response.topic_errors:
            error = for_code(code)
            if code == 0:
                created.append(name)
            elif error is not TopicAlreadyExistsError:  # a racing relay created it: fine
                message = rest[0] if rest and rest[0] else error.__name__
                raise KafkaUnavailableError(f"cannot create Kafka topic {name}: {message}")
        for spec in missing:
            if spec.name in created:
                log.info(
                    "created Kafka topic %s (%d partitions, replication %d)",
                    spec.name, spec.partitions, spec.replication,
                )  # fmt: skip
        return created
    except KafkaError as exc:
        raise KafkaUnavailableError(f"Kafka at {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
