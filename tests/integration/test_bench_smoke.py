"""Every benchmark runs end to end at a tiny size, so `bench/` cannot rot unnoticed.

Seconds, not figures: each bench runs as ``python -m bench.NAME_bench`` against
the suite's PostgreSQL (and Kafka for the relay; the demo bench on its own embedded
one) with ``--no-record``, must exit 0 and must leave ``bench/RESULTS.md`` untouched. A bench added to ``bench/``
without a smoke line here fails ``test_every_bench_has_a_smoke_run``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import available

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "RESULTS.md"

# name -> (tiny-size arguments, a line its output must contain)
SMOKE: dict[str, tuple[list[str], str]] = {
    "demo": ("--images 300 --observe 1".split(), "(data dir / pg_wal / base)"),
    "api": (
        "--images 300 --runs 1 --gets 20 --first-pages 3 --seconds 0.3 --concurrency 2 "
        "--sim-latency-ms 0 --sim-pages 2".split(),
        "same images: True",
    ),
    "grpc": (
        "--images 300 --gets 20 --first-pages 2 --concurrency 2 --seconds 0.3".split(),
        "grpc bench: targets",
    ),
    "head": (
        "--images 300 --churn 1 --pushes 2 --window 2 --modes 1s".split(),
        "head-watch 1s: 2 pushes",
    ),
    "ingest": ("--sizes 300 --runs 1".split(), "| 300 | 1 |"),
    # --client python: wrk (the benchmark's load generator) is not a test prerequisite
    "load": (
        "--images 300 --seed 8 --clients 4 --seconds 1 --warmup 0 --deep-pages 10 "
        "--client python".split(),
        "errors 0 {}",
    ),
    "relay": (
        "--events 200 --rate 400 --duration 1 --runs 1 --batch-size 50".split(),
        "median of 1:",
    ),
    "stats": ("--images 300 --calls 5".split(), "HTTP GET /mirror/v1/stats"),
}

# measured on its own embedded PostgreSQL (its data dir is the figure)
EMBEDDED_ONLY = {"demo"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def test_every_bench_has_a_smoke_run() -> None:
    assert sorted(SMOKE) == available()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_bench_runs_at_a_tiny_size(name: str, postgres_dsn: str, request) -> None:  # type: ignore[no-untyped-def]
    args, expected = SMOKE[name]
    args = [*args, "--no-record"]
    if name not in EMBEDDED_ONLY:
        args += ["--database-url", postgres_dsn]
    if name == "relay":
        args += ["--kafka-bootstrap", request.getfixturevalue("kafka_bootstrap")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env["PYTHONPATH"] = str(ROOT)
    before = _digest(RESULTS)
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}_bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert expected in output, output[-4000:]
    assert _digest(RESULTS) == before, "a --no-record run wrote bench/RESULTS.md"


def test_the_load_bench_without_wrk_says_how_to_install_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env.update(PYTHONPATH=str(ROOT), PATH=str(tmp_path))  # no wrk on this PATH
    done = subprocess.run(
        [sys.executable, "-m", "bench.load_bench", "--no-record"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "load bench: wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), "
        "or --client python for a slower, client-bound run"
    ]
