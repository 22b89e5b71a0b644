"""Demo footprint: what ``mirror demo`` leaves on disk, and how fast its first mirror is.

Runs ``mirror demo --images N`` (50,000 by default, the demo's own default) in a
fresh data dir, samples ``pg_wal`` every second during the first mirror (its
peak), then the data dir, ``pg_wal`` and ``base`` (the tables) right after the
first mirror's line and every 10 s for ``--observe`` seconds while the demo
re-walks the simulator with its churn, then stops it with SIGINT. Sizes are
disk usage (allocated blocks, as ``du``). Budget: the demo's data dir <= 400 MB.

    python -m bench.demo_bench                     # 50,000 images, observed 60 s
    python -m bench.demo_bench --images 200000 --observe 300 --no-record
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.api_bench import child_env, load_average
from bench.results import append_to_section

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Demo footprint"
FIRST_MIRROR = re.compile(r"^first mirror: ([\d,]+) images in ([\d.]+) s \(([\d,]+) images/s\)")
MB = 1024 * 1024


def disk_mb(path: Path) -> float:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:  # removed while walking (a recycled WAL segment)
                pass
    return total / MB


def sizes(pgdata: Path) -> tuple[float, float, float]:
    return disk_mb(pgdata), disk_mb(pgdata / "pg_wal"), disk_mb(pgdata / "base")


def run(args: argparse.Namespace, data_dir: Path) -> tuple[str, float, list[str]]:
    """The first mirror's line, the peak pg_wal MB during it, and the size samples after it."""
    pgdata = data_dir / "pgdata"
    log = data_dir.with_suffix(".log")
    command = [
        sys.executable, "-m", "mirror", "demo", "--data-dir", str(data_dir), "--port", "0",
        "--images", str(args.images), "--seed", str(args.seed),
    ]  # fmt: skip
    peak = 0.0
    samples: list[str] = []
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=child_env())
    try:
        first = ""
        deadline = time.monotonic() + args.timeout
        while not first:
            if proc.poll() is not None:
                raise RuntimeError(f"mirror demo exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no first mirror within {args.timeout:g} s")
            peak = max(peak, disk_mb(pgdata / "pg_wal"))
            first = next(
                (line for line in log.read_text().splitlines() if FIRST_MIRROR.match(line)), ""
            )
            time.sleep(1)
        print(f"demo bench: {first}", flush=True)
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            total, wal, base = sizes(pgdata)
            sample = f"+{elapsed:.0f} s: {total:.0f} / {wal:.0f} / {base:.0f}"
            print(f"demo bench: {sample} MB (data dir / pg_wal / base)", flush=True)
            samples.append(sample)
            if elapsed >= args.observe:
                break
            time.sleep(min(10.0, args.observe - elapsed))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return first, peak, samples


def record(command: str, first: str, peak: float, samples: list[str], load_before: str) -> str:
    match = FIRST_MIRROR.match(first)
    if len(samples) > 3:  # at the first mirror, a little after, at the end
        samples = [samples[0], samples[1], samples[-1]]
    rate = match.group(3) if match else "?"
    return (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} UTC | `{command}` | {match.group(1) if match else '?'} "
        f"| {rate} | {peak:.0f} | {'; '.join(samples)} "
        f"| {os.cpu_count()} cores, load average {load_before} before / {load_average()} after |"
    )


def write_row(row: str) -> None:
    header = (
        f"{SECTION}\n\n"
        "`bench/demo_bench.py`: `mirror demo` in a fresh data dir (embedded PostgreSQL); the first "
        "mirror's rate as the demo prints it; the peak of `pg_wal` during it; then disk usage in MB "
        "of the data dir / `pg_wal` / `base` at the first mirror's line, 10 s after and at the end "
        "of `--observe` (samples every 10 s, printed), while the demo re-walks its churning "
        "simulator. Budget: data dir <= 400 MB at 50,000 "
        "images.\n\n"
        "| date | command | images | first mirror images/s | peak pg_wal MB | after the first "
        "mirror: data dir / pg_wal / base MB | notes |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
    )
    append_to_section(SECTION, header, [row])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--observe", type=float, default=60.0, help="seconds watched after the first mirror"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="for the first mirror")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench.demo_bench", *argv])
    load_before = load_average()
    data_dir = Path(tempfile.mkdtemp(prefix="mirror-demo-bench-"))
    try:
        first, peak, samples = run(args, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.with_suffix(".log").unlink(missing_ok=True)
    row = record(command, first, peak, samples, load_before)
    print(row)
    if not args.no_record:
        write_row(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
