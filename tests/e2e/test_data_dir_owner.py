"""One mirror per embedded data dir: a second `mirror demo` / `mirror run` says who holds it
and exits 4 before printing anything; `mirror stats` shares the running server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mirror.errors import DataDirBusy
from mirror.exit_codes import ExitCode
from mirror.store.owner import own_data_dir
from tests.e2e.demo_process import clean_env, free_port, run_demo

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """Not pytest's tmp_path: another pytest run resets that tree to mode 0700, which the
    embedded server's own system user cannot enter."""
    path = Path(tempfile.mkdtemp(prefix="mirror-test-owner-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def mirror(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )


def test_the_owner_lock_is_exclusive_and_names_its_holder(base_dir: Path) -> None:
    with own_data_dir(base_dir, "mirror run"):
        with pytest.raises(DataDirBusy) as busy:
            with own_data_dir(base_dir, "mirror demo"):
                pass
        assert f"is in use by mirror run (pid {os.getpid()})" in str(busy.value)
    with own_data_dir(base_dir, "mirror demo"):  # released on exit
        pass


def test_a_second_mirror_on_a_data_dir_in_use_exits_4_before_printing(base_dir: Path) -> None:
    with run_demo(base_dir, "--images", "200", "--churn", "0", "--interval", "3600") as demo:
        demo.wait_for_output("first mirror: 200 images")
        expected = (
            f"mirror: the data dir {demo.data_dir} is in use by mirror demo "
            f"(pid {demo.process.pid}); stop it first, or give this one another --data-dir"
        )
        port = str(free_port())
        second = mirror("demo", "--port", port, "--data-dir", str(demo.data_dir))
        assert (second.returncode, second.stdout) == (ExitCode.HELD_ELSEWHERE, "")
        assert second.stderr.strip() == expected
        run = mirror("run", "--port", port, "--data-dir", str(demo.data_dir), "--scope", "folder:x")
        assert (run.returncode, run.stdout) == (ExitCode.HELD_ELSEWHERE, "")
        assert run.stderr.strip() == expected

        # a process that only uses the database shares the demo's running server
        stats = mirror("stats", "--json", "--data-dir", str(demo.data_dir))
        assert stats.returncode == 0, stats.stderr
        assert str(orjson.loads(stats.stdout)["scopes"][0]["images"]) == "200"

        # another data dir, the demo's port: the port error, no word of anything stopping
        port_taken = demo.url.rsplit(":", 1)[1]
        other = mirror("demo", "--port", port_taken, "--data-dir", str(base_dir / "other"))
        assert other.returncode == ExitCode.CONFIG, other.stderr
        assert "demo stopped" not in other.stdout
        assert (
            other.stderr.strip()
            .splitlines()[-1]
            .startswith(f"mirror: configuration error: --port {port_taken}")
        )

        assert demo.interrupt() == 0
        last = demo.output().strip().splitlines()[-1]
        assert last == "demo stopped: simulator, mirror and embedded PostgreSQL are down"
