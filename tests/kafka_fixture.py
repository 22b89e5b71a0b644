"""The real Kafka broker for tests: the session fixture ``kafka_bootstrap``.

Where the broker comes from, first match wins:

1. ``MIRROR_TEST_KAFKA_BOOTSTRAP`` (``host:port`` of a broker you run yourself);
2. a testcontainers ``KafkaContainer`` when a Docker engine answers;
3. a local broker from Maven Central jars (``mirror.devservices.kafka.KafkaBroker``).

With ``CI=true`` a broker that cannot start fails the run; elsewhere it skips the
tests that need Kafka. A conftest uses the fixture with::

    from tests.kafka_fixture import kafka_bootstrap  # noqa: F401

or a run loads it as a plugin: ``pytest -p tests.kafka_fixture``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from mirror.devservices.kafka import KafkaBroker

log = logging.getLogger(__name__)

BOOTSTRAP_ENV = "MIRROR_TEST_KAFKA_BOOTSTRAP"
DOCKER_SOCKET = "/var/run/docker.sock"
DOCKER_PROBE_TIMEOUT = 2.0


@contextlib.contextmanager
def kafka_bootstrap_for_tests() -> Iterator[str]:
    """Yield the bootstrap ``host:port`` of a running broker; stop it afterwards if ours."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        log.info("using the Kafka broker at %s (%s)", external, BOOTSTRAP_ENV)
        yield external
    elif docker_answers():
        with _kafka_container() as bootstrap:
            yield bootstrap
    else:
        with KafkaBroker() as broker:
            yield broker.bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a real Kafka broker shared by the whole test session."""
    with contextlib.ExitStack() as stack:
        try:
            bootstrap = stack.enter_context(kafka_bootstrap_for_tests())
        except Exception as exc:
            # In CI a missing broker is a broken build, never a quietly green one.
            if os.environ.get("CI", "").lower() == "true":
                raise
            pytest.skip(f"no Kafka broker for tests: {exc}")
        yield bootstrap


def docker_answers() -> bool:
    """True when a Docker engine replies to a ping within a couple of seconds."""
    host = os.environ.get("DOCKER_HOST", f"unix://{DOCKER_SOCKET}")
    url = urlparse(host)
    try:
        if url.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(DOCKER_PROBE_TIMEOUT)
                sock.connect(url.path)
                return _ping(sock)
        if url.scheme == "tcp" and url.hostname:
            address = (url.hostname, url.port or 2375)
            with socket.create_connection(address, timeout=DOCKER_PROBE_TIMEOUT) as sock:
                return _ping(sock)
    except OSError:
        return False
    return _docker_info_succeeds()  # ssh:// and friends: let the CLI decide


def _ping(sock: socket.socket) -> bool:
    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    status_line = sock.recv(64).split(b"\r\n", 1)[0]  # b"HTTP/1.0 200 OK"
    return status_line.startswith(b"HTTP/1.") and b" 200 " in status_line + b" "


def _docker_info_succeeds() -> bool:
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    # Imported here: testcontainers pulls in the Docker SDK, which only this path needs.
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.14 keeps it at the old place
        from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as container:
        bootstrap = container.get_bootstrap_server()
        log.info("using a testcontainers Kafka broker at %s", bootstrap)
        yield bootstrap
