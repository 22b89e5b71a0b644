"""`mirror demo --reset`: removes the demo's index only, and never under a running server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirror.cli import main
from mirror.errors import ConfigError
from mirror.runner.demo_reset import reset_demo_data
from mirror.store.owner import own_data_dir


def fake_cluster(data_dir: Path, pid: int | None = None) -> Path:
    pgdata = data_dir / "pgdata"
    (pgdata / "base").mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("18\n")
    if pid is not None:
        (pgdata / "postmaster.pid").write_text(f"{pid}\n{pgdata}\n")
    return pgdata


def test_reset_removes_the_demo_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry-mirror-demo"
    fake_cluster(data_dir)
    result = CliRunner().invoke(main, ["demo", "--reset", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert result.output == f"mirror demo: removed {data_dir}\n"
    assert not data_dir.exists()


def test_reset_keeps_files_it_did_not_make(tmp_path: Path) -> None:
    fake_cluster(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert "kept: it holds other files" in reset_demo_data(tmp_path)
    assert not (tmp_path / "pgdata").exists() and (tmp_path / "notes.txt").exists()
    assert "holds no demo index" in reset_demo_data(tmp_path)


def test_reset_refuses_while_the_server_runs(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pgdata = fake_cluster(tmp_path, pid=sleeper.pid)
        with pytest.raises(ConfigError, match=f"pid {sleeper.pid}.*stop the demo"):
            reset_demo_data(tmp_path)
        assert pgdata.exists()
        result = CliRunner().invoke(main, ["demo", "--reset", "--data-dir", str(tmp_path)])
        assert result.exit_code == 1 and "is running on" in result.output
    finally:
        sleeper.kill()
        sleeper.wait()
    # a stale postmaster.pid (the process is gone) does not block the reset
    assert reset_demo_data(tmp_path) == f"removed {tmp_path}"


def test_reset_of_nothing_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "never-made"
    assert reset_demo_data(missing) == f"nothing to remove: {missing} does not exist"
    assert os.listdir(tmp_path) == []


def test_reset_removes_the_owner_lock_a_stopped_demo_left(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry-mirror-demo"
    fake_cluster(data_dir)
    (data_dir / "owner.lock").write_text("")  # what a stopped demo leaves behind
    assert reset_demo_data(data_dir) == f"removed {data_dir}"
    assert not data_dir.exists()


def test_reset_refuses_while_a_demo_owns_the_data_dir(tmp_path: Path) -> None:
    pgdata = fake_cluster(tmp_path)
    with own_data_dir(tmp_path, "mirror demo"):
        result = CliRunner().invoke(main, ["demo", "--reset", "--data-dir", str(tmp_path)])
        assert result.exit_code == 4, result.output
        assert "in use by mirror demo (pid" in result.output
    assert pgdata.exists()
