"""`mirror stats` on a data dir without an index: one line, a hint, nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mirror.cli import main


def test_the_default_data_dir_points_to_the_demos_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # platformdirs' per-user data dir on Linux
    for name in ("MIRROR_DATABASE_URL", "MIRROR_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    demo = tmp_path / "registry-mirror-demo"
    (demo / "pgdata").mkdir(parents=True)
    (demo / "pgdata" / "PG_VERSION").write_text("18\n")
    result = CliRunner().invoke(main, ["stats"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"mirror: no index in {tmp_path / 'registry-mirror'}: nothing was mirrored there; "
        f"the demo's index is in {demo}: add --data-dir {demo}"
    ]
    assert not (tmp_path / "registry-mirror").exists()


def test_an_empty_data_dir_is_not_made_an_index(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["stats", "--data-dir", str(tmp_path / "none"), "--json"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"mirror: no index in {tmp_path / 'none'}: nothing was mirrored there; "
        "pass --data-dir DIR or --database-url DSN"
    ]
    assert not (tmp_path / "none").exists()
