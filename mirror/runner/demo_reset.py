"""``mirror demo --reset``: remove the demo's index, and its data dir when nothing else is there.

Only what the demo made is removed: ``<data dir>/pgdata`` (the embedded
PostgreSQL and its index) and ``owner.lock`` (the data dir's owner lock, held
meanwhile, so a running ``mirror demo``/``run`` makes it refuse), then the data
dir itself if that left it empty; a
data dir holding anything else is kept, so a mistyped ``--data-dir`` cannot
delete unrelated files. A demo still running on the dir (its PostgreSQL's
``postmaster.pid`` names a live process) is refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mirror.errors import ConfigError
from mirror.store.embedded import EmbeddedPostgres
from mirror.store.owner import LOCK_FILE, own_data_dir


def running_server_pid(pgdata: Path) -> int | None:
    """The PID in ``postmaster.pid`` when that process is alive, else None."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, someone else's
    return pid


def reset_demo_data(data_dir: Path) -> str:
    """Remove the demo's index in ``data_dir``; returns what was done, in one line."""
    pgdata = EmbeddedPostgres(data_dir).pgdata
    pid = running_server_pid(pgdata)
    if pid is not None:
        raise ConfigError(
            f"--reset: a PostgreSQL (pid {pid}) is running on {data_dir}: "
            "stop the demo (Ctrl-C) first"
        )
    if not data_dir.exists():
        return f"nothing to remove: {data_dir} does not exist"
    # DataDirBusy while a mirror run/demo owns the dir; unlinking the lock file we hold
    # is safe (the lock lives with the open descriptor until the block ends)
    with own_data_dir(data_dir, "mirror demo --reset"):
        removed = pgdata.exists()
        if removed:
            shutil.rmtree(pgdata)
        (data_dir / LOCK_FILE).unlink(missing_ok=True)
        if not any(data_dir.iterdir()):
            data_dir.rmdir()
            return f"removed {data_dir}"
    if removed:
        return f"removed the demo's index ({pgdata}); {data_dir} kept: it holds other files"
    return f"nothing to remove: {data_dir} holds no demo index (kept as it is)"
