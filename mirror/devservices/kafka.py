"""A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM), no Docker.

The jars come from Maven Central through ``tools/kafka/pom.xml`` (``ensure_kafka_jars``);
``KafkaBroker`` formats a data dir and runs ``kafka.Kafka`` as a child process::

    with KafkaBroker() as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)

    broker.stop(keep_data=True)   # a fault test "crashes" the broker...
    broker.start()                # ...and brings it back on the same ports and data

Command line, used by ``make services`` / ``make services-down``::

    python -m mirror.devservices.kafka start --state-dir .services/kafka
    python -m mirror.devservices.kafka stop --state-dir .services/kafka
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from mirror.errors import KafkaBrokerError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
MAVEN_TIMEOUT = 900.0
LOG_TAIL_LINES = 40
MARKER_NAME = ".complete"
LOG_NAME = "broker.log"
STATE_NAME = "kafka.json"


# --------------------------------------------------------------------------- jars


def default_root() -> Path:
    """The checkout that holds ``tools/kafka`` (this file is ``mirror/devservices/kafka.py``)."""
    return Path(__file__).resolve().parents[2]


def ensure_kafka_jars(root: Path | None = None) -> Path:
    """Resolve the broker's jars into ``tools/kafka/.cache/lib`` once; return that folder.

    Runs Maven only when the folder is missing, incomplete, or was made from another
    ``pom.xml``; concurrent callers (pytest-xdist workers) wait on a file lock.
    """
    tools = (root or default_root()) / "tools" / "kafka"
    pom = tools / "pom.xml"
    if not pom.is_file():
        raise KafkaBrokerError(f"{pom} not found; pass the checkout root to ensure_kafka_jars()")
    cache = tools / ".cache"
    lib = cache / "lib"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if _lib_complete(lib, digest):
        return lib
    mvn = require_tool("mvn", "Maven 3.8+")
    require_tool("java", "Java 17+")
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / ".lock"):
        if not _lib_complete(lib, digest):  # another process may have finished while we waited
            _resolve_jars(mvn, pom, lib, digest)
    return lib


def require_tool(name: str, what: str) -> str:
    """The full path of a command, or a one-line error naming what to install."""
    path = shutil.which(name)
    if path is None:
        raise KafkaBrokerError(f"`{name}` not found on PATH: the local Kafka broker needs {what}")
    return path


def _lib_complete(lib: Path, digest: str) -> bool:
    try:
        marker = json.loads((lib / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("pom_sha256") == digest and all(
        (lib / jar).is_file() for jar in marker.get("jars", ())
    )


def _resolve_jars(mvn: str, pom: Path, lib: Path, digest: str) -> None:
    # Resolve into a scratch folder and rename it into place, so a crash or Ctrl-C
    # never leaves a half-filled lib folder that looks complete.
    partial = lib.with_name(lib.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
    ]  # fmt: skip
    log.info("resolving Kafka broker jars from Maven Central into %s", lib)
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaBrokerError(f"mvn did not finish in {MAVEN_TIMEOUT:.0f}s") from exc
    jars = sorted(p.name for p in partial.glob("*.jar"))
    if done.returncode != 0 or not jars:
        output = _tail_text(done.stdout + done.stderr)
        raise KafkaBrokerError(f"mvn failed (exit {done.returncode}) resolving {pom}:\n{output}")
    marker = {"pom_sha256": digest, "jars": jars}
    (partial / MARKER_NAME).write_text(json.dumps(marker, indent=1))
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)
    log.info("resolved %d jars in %.1fs", len(jars), time.monotonic() - started)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- broker


class KafkaBroker:
    """One Kafka broker process on 127.0.0.1, combined broker+controller (KRaft).

    ``data_dir`` defaults to a fresh temporary folder, removed by ``stop()`` unless
    ``keep_data=True``; a folder you pass in is never removed. Ports default to free
    ones picked on the first ``start()`` and are kept for later starts.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int = 0,
        controller_port: int = 0,
        root: Path | None = None,
        heap: str = "512m",
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.root = root or default_root()
        self._owns_data = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="mirror-kafka-"))
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def bootstrap(self) -> str:
        if not self.port:
            raise KafkaBrokerError("the broker has no port yet: call start() first")
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    def start(self) -> None:
        """Format the data dir if it is new, start the JVM and wait until it serves metadata."""
        if self.running:
            raise KafkaBrokerError(f"the broker on {self.bootstrap} is already running")
        try:
            java = require_tool("java", "Java 17+")
            lib = ensure_kafka_jars(self.root)
        except KafkaBrokerError:
            if self._owns_data:  # nothing ran yet: leave no empty temp dir behind
                with contextlib.suppress(OSError):
                    self.data_dir.rmdir()
            raise
        self._assign_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = self._write_properties()
        if not (self._log_dir / "meta.properties").exists():
            self._format(java, lib, properties)
        started = time.monotonic()
        self._process = self._launch(java, lib, properties)
        try:
            self._wait_until_ready(started + self.start_timeout)
        except BaseException:
            self._terminate(STOP_TIMEOUT)  # the data dir stays: its broker.log says why
            raise
        log.info(
            "Kafka broker ready on %s in %.1fs (pid %d, data %s)",
            self.bootstrap, time.monotonic() - started, self._process.pid, self.data_dir,
        )  # fmt: skip

    def stop(self, *, keep_data: bool = False, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (then SIGKILL after ``timeout``); remove a temporary data dir unless kept."""
        self._terminate(timeout)
        if not keep_data and self._owns_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def detach(self) -> int:
        """Leave the broker running after this object is gone (the CLI); return its pid."""
        if self._process is None or not self.running:
            raise KafkaBrokerError("no running broker to detach")
        pid = self._process.pid
        self._process = None
        return pid

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"KafkaBroker(port={self.port}, running={self.running}, data_dir={self.data_dir})"

    # -- start-up steps

    @property
    def _log_dir(self) -> Path:
        return self.data_dir / "kraft-logs"

    def _assign_ports(self) -> None:
        missing = [not self.port, not self.controller_port].count(True)
        free = iter(free_ports(missing, avoid={self.port, self.controller_port}))
        self.port = self.port or next(free)
        self.controller_port = self.controller_port or next(free)

    def _write_properties(self) -> Path:
        path = self.data_dir / "server.properties"
        lines = [f"{key}={value}" for key, value in self._properties().items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def _properties(self) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            # Static voters: `format` needs no --standalone and the quorum is just us.
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            # One broker: internal topics cannot have the default three replicas, and
            # without these the group/transaction coordinators never become available.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Otherwise every new consumer group waits 3 s before its first assignment.
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "3",
            "auto.create.topics.enable": "true",
            "log.dirs": str(self._log_dir),
        }

    def _java_command(self, java: str, lib: Path, main: str, *args: str) -> list[str]:
        log4j = self.root / "tools" / "kafka" / "log4j2.properties"
        return [
            java, f"-Xmx{self.heap}", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp", str(lib / "*"),  # java expands the wildcard itself; no shell involved
            main, *args,
        ]  # fmt: skip

    def _format(self, java: str, lib: Path, properties: Path) -> None:
        command = self._java_command(
            java, lib, "kafka.tools.StorageTool",
            "format", "-t", new_cluster_id(), "-c", str(properties),
        )  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            output = _tail_text(done.stdout + done.stderr)
            raise KafkaBrokerError(
                f"kafka StorageTool format failed (exit {done.returncode}):\n{output}"
            )

    def _launch(self, java: str, lib: Path, properties: Path) -> subprocess.Popen[bytes]:
        # Append, so a restarted broker's log follows the previous run; the offset lets
        # a failure report show only this run's lines.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = self._java_command(java, lib, "kafka.Kafka", str(properties))
        with self.log_path.open("ab") as out:
            # Own session: Ctrl-C in the terminal reaches pytest, whose teardown stops
            # the broker in order, instead of killing the JVM mid-test.
            return subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=True,
            )  # fmt: skip

    def _wait_until_ready(self, deadline: float) -> None:
        assert self._process is not None
        last_error: Exception | None = None
        while True:
            code = self._process.poll()
            if code is not None:
                raise KafkaBrokerError(
                    f"the Kafka broker exited with code {code} while starting; "
                    f"{LOG_TAIL_LINES} last lines of {self.log_path}:\n{self._log_tail()}"
                )
            try:
                brokers = probe_metadata(HOST, self.port)
            except (OSError, _ProbeError) as exc:
                last_error = exc
            else:
                if any(port == self.port for _, _, port in brokers):
                    return
                last_error = _ProbeError(f"metadata lists no broker on our port: {brokers}")
            if time.monotonic() > deadline:
                raise KafkaBrokerError(
                    f"the Kafka broker on {self.bootstrap} was not ready after "
                    f"{self.start_timeout:.0f}s ({last_error}); "
                    f"last lines of {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _terminate(self, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "Kafka broker pid %d ignored SIGTERM for %.0fs; killing it", process.pid, timeout
            )
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                return _tail_text(handle.read().decode(errors="replace"))
        except OSError as exc:
            return f"(no log: {exc})"


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding; `format` rejects a leading '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def free_ports(count: int, *, avoid: set[int] | None = None) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    # Hold every socket open until all are picked, so the kernel cannot hand out one twice.
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            if avoid and sock.getsockname()[1] in avoid:
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the JVM leads its own session, so its group id is its pid


def _tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------- readiness probe
# A blocking ApiVersions + Metadata round-trip over a plain socket: it works from sync code
# and from inside a running event loop alike (fault tests call start() in async tests),
# and it does not spam aiokafka's connection errors while the broker is still booting.

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"mirror-devservices"


class _ProbeError(Exception):
    """The broker answered, but not (yet) with what a ready broker says."""


def probe_metadata(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Ask the broker for cluster metadata; return its brokers as (node_id, host, port)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        versions = _api_versions(sock)
        low, high = versions.get(API_METADATA, (0, -1))
        # Versions 1-8 share the simple non-flexible layout decoded below.
        version = min(high, 8)
        if version < max(low, 1):
            raise KafkaBrokerError(
                f"the broker supports Metadata v{low}-v{high}; the probe speaks v1-v8"
            )
        body = struct.pack(">i", -1)  # null topic list: no topic is created or named
        if version >= 4:
            body += b"\x00"  # allow_auto_topic_creation = false
        if version >= 8:
            body += b"\x00\x00"  # no authorized-operations lists
        return _decode_brokers(_round_trip(sock, API_METADATA, version, 2, body), version)


def _api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    reader = _Reader(_round_trip(sock, API_VERSIONS, 0, 1, b""))
    error = reader.int16()
    if error != 0:
        raise _ProbeError(f"ApiVersions answered error code {error}")
    versions = {}
    for _ in range(reader.int32()):
        key, low, high = reader.int16(), reader.int16(), reader.int16()
        versions[key] = (low, high)
    return versions


def _decode_brokers(payload: bytes, version: int) -> list[tuple[int, str, int]]:
    reader = _Reader(payload)
    if version >= 3:
        reader.int32()  # throttle_time_ms
    brokers = []
    for _ in range(reader.int32()):
        node_id, host, port = reader.int32(), reader.string(), reader.int32()
        reader.string()  # rack
        brokers.append((node_id, host or "", port))
    return brokers


def _round_trip(
    sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes
) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    request = header + body
    sock.sendall(struct.pack(">i", len(request)) + request)
    (size,) = struct.unpack(">i", _receive(sock, 4))
    response = _receive(sock, size)
    (answered,) = struct.unpack_from(">i", response)
    if answered != correlation_id:
        raise _ProbeError(f"correlation id {answered} answers no request of ours")
    return response[4:]


def _receive(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise _ProbeError("the broker closed the connection mid-response")
        chunks += chunk
    return bytes(chunks)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def _unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(fmt, self._data, self._offset)
        except struct.error as exc:
            raise _ProbeError(f"truncated response: {exc}") from exc
        self._offset += struct.calcsize(fmt)
        return value

    def int16(self) -> int:
        return int(self._unpack(">h"))

    def int32(self) -> int:
        return int(self._unpack(">i"))

    def string(self) -> str | None:
        length = self.int16()
        if length < 0:
            return None
        raw = self._data[self._offset : self._offset + length]
        self._offset += length
        return raw.decode()


# --------------------------------------------------------------------------- command line


def _start_detached(state_dir: Path, port: int) -> str:
    state_file = state_dir / STATE_NAME
    state = _read_state(state_file)
    if state and _is_live_broker(state.get("pid")):
        log.info("Kafka broker already running (pid %d)", state["pid"])
        return str(state["bootstrap"])
    # Reuse the previous ports so clients configured from the last start keep working.
    broker = KafkaBroker(
        state_dir / "data",
        port=port or (state or {}).get("port", 0),
        controller_port=(state or {}).get("controller_port", 0),
    )
    broker.start()
    state = {
        "pid": broker.detach(),
        "bootstrap": broker.bootstrap,
        "port": broker.port,
        "controller_port": broker.controller_port,
        "data_dir": str(broker.data_dir),
        "log": str(broker.log_path),
    }
    state_file.write_text(json.dumps(state, indent=1) + "\n")
    return broker.bootstrap


def _stop_detached(state_dir: Path, *, wipe: bool, timeout: float = STOP_TIMEOUT) -> bool:
    state_file = state_dir / STATE_NAME
    state = _read_state(state_file)
    stopped = False
    if state and _is_live_broker(state.get("pid")):
        pid = int(state["pid"])
        _signal_group(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            log.warning("Kafka broker pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 10.0)
        stopped = True
    if wipe:
        state_file.unlink(missing_ok=True)
        shutil.rmtree(state_dir / "data", ignore_errors=True)
    elif state:
        # Keep the ports: the next start reuses them, so clients keep their bootstrap.
        state_file.write_text(json.dumps({**state, "pid": None}, indent=1) + "\n")
    return stopped


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _is_live_broker(pid: int | None) -> bool:
    # Check the command line too: after a reboot the recorded pid may be someone else's.
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return b"kafka.Kafka" in cmdline and state != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_live_broker(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mirror.devservices.kafka",
        description="Run a local single-node Kafka broker (KRaft) from Maven Central jars.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start detached; print MIRROR_KAFKA_BOOTSTRAP=…")
    start.add_argument("--state-dir", type=Path, required=True)
    start.add_argument("--port", type=int, default=0, help="client port (default: free or last)")
    stop = commands.add_parser("stop", help="stop the broker started with the same --state-dir")
    stop.add_argument("--state-dir", type=Path, required=True)
    stop.add_argument("--wipe", action="store_true", help="also delete the broker's data")
    commands.add_parser("fetch", help="resolve the broker's jars from Maven Central (once)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="kafka: %(message)s")
    try:
        if args.command == "fetch":
            print(f"kafka: jars ready in {ensure_kafka_jars()}")
        elif args.command == "start":
            args.state_dir.mkdir(parents=True, exist_ok=True)
            print(f"export MIRROR_KAFKA_BOOTSTRAP={_start_detached(args.state_dir, args.port)}")
        else:
            stopped = _stop_detached(args.state_dir, wipe=args.wipe)
            print("kafka: stopped" if stopped else "kafka: was not running")
    except KafkaBrokerError as exc:
        print(f"kafka: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
