"""`mirror demo` as a real subprocess for the end-to-end tests: started, awaited, stopped, checked.

The demo runs exactly as a newcomer runs it (``python -m mirror demo``), with a
temporary data dir (its own embedded PostgreSQL), a free port and none of the
developer's MIRROR_* settings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(
    url: str, params: dict[str, Any] | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """Status and body of a GET (error statuses are answers too, not exceptions)."""
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's MIRROR_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["MIRROR_GRPC_PORT"] = "0"  # never the shared default 50051
    env.update(extra)
    return env


@dataclass
class DemoProcess:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON answer; anything but 200 fails the test with the body."""
        status, body = http_get(self.url + path, params)
        assert status == 200, (path, params, status, body[:500])
        return orjson.loads(body)

    def folder_ids(self) -> list[str]:
        """The folders the demo mirrors (its scopes)."""
        scopes = self.get("/mirror/v1/sync").get("scopes", [])
        return [s["scope"].split(":", 1)[1] for s in scopes if s["scope"].startswith("folder:")]

    def wait_for_output(self, text: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"mirror demo exited ({self.process.returncode}) before printing {text!r}:\n"
                    + self.output()[-4000:]
                )
            time.sleep(0.2)
        raise AssertionError(
            f"mirror demo did not print {text!r} in {timeout:.0f}s:\n" + self.output()[-4000:]
        )

    def postmaster_pid(self) -> int | None:
        pid_file = self.data_dir / "pgdata" / "postmaster.pid"
        try:
            return int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def interrupt(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGINT (Ctrl-C), then wait a bounded time for the exit; the return code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"mirror demo did not stop within {timeout:.0f}s of SIGINT:\n"
                + self.output()[-4000:]
            ) from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purpose
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return status != "Z"
    return True


def process_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, pgrp
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@contextlib.contextmanager
def run_demo(tmp_path: Path, *args: str) -> Iterator[DemoProcess]:
    """Start ``mirror demo`` and wait until its API answers; kill it (and its PostgreSQL) at the end."""
    port = free_port()
    data_dir = tmp_path / "demo-data"
    log_path = tmp_path / "demo.log"
    command = [
        sys.executable,
        "-m",
        "mirror",
        "demo",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True
        )
    demo = DemoProcess(process, f"http://127.0.0.1:{port}", data_dir, log_path)
    try:
        _wait_until_ready(demo)
        yield demo
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
        _stop_leftover_postgres(demo)


def _wait_until_ready(demo: DemoProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if demo.process.poll() is not None:
            raise AssertionError(
                f"mirror demo exited with {demo.process.returncode} while starting:\n"
                + demo.output()[-4000:]
            )
        with contextlib.suppress(OSError):
            if http_get(demo.url + "/readyz", timeout=2.0)[0] == 200:
                return
        time.sleep(0.3)
    raise AssertionError(
        f"mirror demo not ready in {STARTUP_TIMEOUT_S:.0f}s:\n" + demo.output()[-4000:]
    )


def _stop_leftover_postgres(demo: DemoProcess) -> None:
    """Only after a failure: never leave a server behind, even when the demo did."""
    pid = demo.postmaster_pid()
    if pid is not None and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
