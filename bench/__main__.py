"""``python -m bench [NAME ...]`` (``make bench``): run the benchmarks one after another.

Each ``bench/<name>_bench.py`` writes its figures, with its exact command and
the date, to ``bench/RESULTS.md``. Without names every benchmark runs; they
take minutes each at the sizes of PRODUCT.md. Run one alone for its options,
e.g. ``python -m bench.ingest_bench --help``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.removesuffix("_bench") for p in HERE.glob("*_bench.py"))


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(available())}")
        return 2
    failed = []
    for name in names:
        print(f"bench: {name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.{name}_bench"], cwd=HERE.parent)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"bench: failed: {', '.join(failed)}")
        return 1
    print("bench: figures are in bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
