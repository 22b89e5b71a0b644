"""React when an image is deleted: a runnable example of the subscriber helper.

Run it next to a mirror that publishes to Kafka (``mirror run`` or ``mirror relay``)::

    python examples/on_delete.py --kafka-bootstrap 127.0.0.1:9092
    python examples/on_delete.py --group cache-invalidator     # MIRROR_KAFKA_BOOTSTRAP set

It joins a consumer group (so several copies share the work and a restart resumes
where it left off), receives only ``registry.image.deleted``, drops the duplicates a
relay restart may send, and commits each event after ``on_image_deleted`` returned.
Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from mirror.events.subscriber import EventSubscriber, ReceivedEvent

log = logging.getLogger("on_delete")


async def on_image_deleted(event: ReceivedEvent) -> None:
    """Your reaction goes here: invalidate a cache, block a deploy, write an audit line…

    It must be idempotent: after a crash, events not yet committed come again.
    """
    image = event.data.get("image", {})
    when = f"{event.time:%Y-%m-%d %H:%M:%S}" if event.time else "?"
    print(
        f"{when} image {event.subject} deleted "
        f"({event.data.get('reason', 'unknown reason')}): "
        f"{image.get('name', '?')}@{image.get('digest', '?')} tags={image.get('tags', [])}",
        flush=True,
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kafka-bootstrap",
        default=os.environ.get("MIRROR_KAFKA_BOOTSTRAP"),
        help="host:port[,…] (default: $MIRROR_KAFKA_BOOTSTRAP)",
    )
    parser.add_argument(
        "--topic-prefix", default=os.environ.get("MIRROR_KAFKA_TOPIC_PREFIX", "registry-mirror")
    )
    parser.add_argument("--group", default="on-delete-example", help="consumer group id")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new group starts at the oldest event Kafka keeps (default: new events only)",
    )
    args = parser.parse_args()
    if not args.kafka_bootstrap:
        parser.error("set --kafka-bootstrap or MIRROR_KAFKA_BOOTSTRAP")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with EventSubscriber(
        args.kafka_bootstrap,
        group=args.group,
        types=["registry.image.deleted"],
        topic_prefix=args.topic_prefix,
        from_beginning=args.from_beginning,
    ) as subscriber:
        log.info("waiting for deletions on %s (group %s)", subscriber.topics, args.group)
        await subscriber.run(on_image_deleted, stop=stop)
        stats = subscriber.stats
    log.info(
        "stopped: %d deletions handled, %d duplicates dropped", stats.delivered, stats.duplicates
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
