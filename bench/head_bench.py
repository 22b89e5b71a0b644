"""Push-to-event latency: how long after a push its ``registry.image.created`` is committed,
with the head-watch on (``MIRROR_HEAD_INTERVAL``, default 5 s) and off.

One run: the simulator (``mirror simulate``, its own process, ``--churn`` changes a
second) and a fresh database on an embedded PostgreSQL; a first mirror
(``mirror ingest --once``); then per mode ``mirror ingest`` in continuous mode
(default ``--interval`` 60 s, the defaults of ``mirror run``) in a child process,
and pushes through the simulator's admin API at random moments over
``--window`` seconds. Latency = the outbox row's commit time (``outbox.time``,
the database clock) - the moment the push was answered (same machine clock).
p50/p99/max per mode go to ``bench/RESULTS.md`` with the exact command line.

    python -m bench.head_bench                               # 1,000,000 images, 30 pushes a mode
    python -m bench.head_bench --images 100000 --pushes 10 --window 60 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from bench.ingest_bench import (
    bench_server,
    child_env,
    create_database,
    drop_database,
    ingest_pass,
    simulator,
)
from bench.results import append_to_section

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Push-to-event latency (head-watch)"
TARGET_P99_S = 10.0
WAIT_AFTER_S = 240.0  # the longest a push may take before the run gives up on it


def admin(url: str, method: str, path: str, body: object | None = None) -> object:
    request = urllib.request.Request(
        f"{url}/_simulator{path}",
        method=method,
        data=orjson.dumps(body) if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())


def repositories(url: str) -> list[str]:
    state = admin(url, "GET", "/state")
    assert isinstance(state, dict)
    names: list[str] = []
    for folder in state["folders"]:
        for registry in folder["registries"]:
            repos = admin(url, "GET", f"/repositories?registryId={registry['id']}")
            assert isinstance(repos, dict)
            names += [r["name"] for r in repos["repositories"]]
    return names


def start_loop(
    url: str, dsn: str, scopes: list[str], head_interval: str
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mirror", "ingest", "--upstream-url", url, "--database-url", dsn,
           "--log-level", "WARNING"]  # fmt: skip
    for scope in scopes:
        cmd += ["--scope", scope]
    env = child_env(
        MIRROR_UPSTREAM_RPS="2000", MIRROR_UPSTREAM_CONCURRENCY="8",
        MIRROR_HEAD_INTERVAL=head_interval,
    )  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


async def measure(
    url: str,
    dsn: str,
    scopes: list[str],
    head_interval: str,
    pushes: int,
    window: float,
    rng: random.Random,
) -> list[float]:
    """Latencies (s) of ``pushes`` pushes spread over ``window`` seconds."""
    repos = repositories(url)
    loop = start_loop(url, dsn, scopes, head_interval)
    conn = await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(10)  # the loop's first pass starts (an unchanged re-sync)
        moments = sorted(rng.uniform(0, window) for _ in range(pushes))
        pushed: dict[str, float] = {}
        start = time.time()
        for moment in moments:
            await asyncio.sleep(max(0.0, start + moment - time.time()))
            image = admin(url, "POST", "/images", {"repositoryName": rng.choice(repos)})
            assert isinstance(image, dict)
            pushed[str(image["id"])] = time.time()
        deadline = time.time() + WAIT_AFTER_S
        seen: dict[str, float] = {}
        while len(seen) < len(pushed) and time.time() < deadline:
            rows = await conn.fetch(
                "SELECT key, extract(epoch FROM time) AS at FROM outbox_events "
                "WHERE type = 'registry.image.created' AND key = ANY($1::text[])",
                list(pushed.keys() - seen.keys()),
            )
            seen.update((r["key"], float(r["at"])) for r in rows)
            await asyncio.sleep(0.5)
        missing = len(pushed) - len(seen)
        if missing:
            print(f"  {missing} push(es) had no event after {WAIT_AFTER_S:.0f}s", flush=True)
        return [seen[k] - pushed[k] for k in seen]
    finally:
        await conn.close()
        loop.send_signal(signal.SIGTERM)
        try:
            loop.wait(timeout=120)
        except subprocess.TimeoutExpired:
            loop.kill()
            loop.wait()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def record(rows: list[str], command: str) -> None:
    intro = f"""{SECTION}

`bench/head_bench.py` (target: push seen upstream -> event, 1,000,000 images, default
settings, p99 <= 10 s). A simulator of the given size with churn, a first mirror, then
`mirror ingest` in continuous mode (interval 60 s) with `MIRROR_HEAD_INTERVAL` as in
the row, pushes at random moments; latency = outbox commit time - push answered.
The machine is shared with other engineers' tests (see the load average).

| date | command | images | churn/s | head-watch | pushes | p50 (s) | p99 (s) | max (s) | load avg (1 min) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
"""
    append_to_section(SECTION, intro, rows, RESULTS)
    print(f"recorded in {RESULTS} ({command})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--churn", type=float, default=5.0, help="simulator changes a second")
    parser.add_argument("--pushes", type=int, default=30, help="pushes per mode")
    parser.add_argument(
        "--window", type=float, default=180.0, help="seconds the pushes spread over"
    )
    parser.add_argument("--modes", default="5s,off", help="MIRROR_HEAD_INTERVAL values to compare")
    parser.add_argument("--database-url", help="an admin DSN (default: embedded PostgreSQL)")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    command = "python -m bench.head_bench" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv or sys.argv[1:])
        else ""
    )
    rng = random.Random(16)
    rows: list[str] = []
    with bench_server(args.database_url) as admin_dsn:
        dsn = asyncio.run(create_database(admin_dsn))
        try:
            with simulator(args.images, seed=1) as (url, folders):
                scopes = [f"folder:{f}" for f in folders]
                started = time.monotonic()
                first = ingest_pass(url, dsn, scopes)
                print(
                    f"first mirror: {first.images:,} images in {time.monotonic() - started:.0f}s",
                    flush=True,
                )
                admin(url, "PUT", "/churn", {"rate": args.churn})
                for mode in args.modes.split(","):
                    load = os.getloadavg()[0]
                    latencies = asyncio.run(
                        measure(url, dsn, scopes, mode, args.pushes, args.window, rng)
                    )
                    if not latencies:
                        print(f"{mode}: no push was seen", flush=True)
                        continue
                    p50, p99 = statistics.median(latencies), quantile(latencies, 0.99)
                    print(
                        f"head-watch {mode}: {len(latencies)} pushes, p50 {p50:.1f}s p99 {p99:.1f}s "
                        f"max {max(latencies):.1f}s",
                        flush=True,
                    )
                    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
                    rows.append(
                        f"| {date} | `{command}` | {args.images:,} | {args.churn:g} | {mode} | "
                        f"{len(latencies)}/{args.pushes} | {p50:.1f} | {p99:.1f} | "
                        f"{max(latencies):.1f} | {load:.1f} |"
                    )
        finally:
            asyncio.run(drop_database(admin_dsn, dsn))
    if rows and not args.no_record:
        record(rows, command)


if __name__ == "__main__":
    main()
