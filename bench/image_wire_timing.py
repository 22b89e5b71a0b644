"""In-process cost of encoding a gRPC List page: JSON docs to ``ListImagesResponse`` bytes.

The docs are the index's (the simulator's JSON of the bench registry, as
``bench/api_dataset.py`` stores them). Each figure is milliseconds per page of
100 images, min / median over the pages of ``--docs`` docs, best of
``--rounds`` rounds:

- ``orjson.loads``: parsing alone;
- Python cold: the pure-Python encoder with its layer memo emptied before each page;
- Python warm: the same with the memo warm (every page encoded before);
- C objects: ``orjson.loads`` and ``mirror._image_wire.image`` (the C encoder of dicts);
- C text: ``doc_bytes`` as served, the C module reading the JSON text itself;
- page: joining 100 serialized images and the token into the response.

    python -m bench.image_wire_timing                  # 2,000 docs of the 1,000,000 registry
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import orjson

from mirror import image_wire
from mirror.upstream.simulator.generator import RegistryModel

PAGE = 100


def docs_of(images: int, seed: int, count: int) -> list[bytes]:
    model = RegistryModel(images=images, seed=seed)
    start = images // 2
    return [orjson.dumps(sim.to_json()) for sim in model.iter_images(start, start + count)]


def per_page(
    pages: Sequence[Sequence[bytes]],
    encode: Callable[[Sequence[bytes]], object],
    before: Callable[[], None] = lambda: None,
) -> list[float]:
    out = []
    for page in pages:
        before()
        started = time.perf_counter()
        encode(page)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--docs", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    docs = docs_of(args.images, args.seed, args.docs)
    pages = [docs[i : i + PAGE] for i in range(0, len(docs), PAGE)]
    wires = [[image_wire.doc_bytes(d) for d in page] for page in pages]
    token = "x" * 40

    def python(page: Sequence[bytes]) -> object:
        return [image_wire.python_image_bytes(orjson.loads(d)) for d in page]

    def native(page: Sequence[bytes]) -> object:
        return [image_wire.doc_bytes(d) for d in page]

    def forget() -> None:
        image_wire._BLOB_MEMO.clear()

    by_wire = {id(p): w for p, w in zip(pages, wires, strict=True)}
    cases: list[tuple[str, Callable[[Sequence[bytes]], object], Callable[[], None]]] = [
        ("orjson.loads", lambda page: [orjson.loads(d) for d in page], lambda: None),
        ("Python cold", python, forget),
        ("Python warm", python, lambda: None),
    ]
    if image_wire.NATIVE is not None:
        image = image_wire.NATIVE.image
        cases.append(
            ("C objects", lambda page: [image(orjson.loads(d)) for d in page], lambda: None)
        )
        cases.append(("C text", native, lambda: None))
    cases.append(
        ("page", lambda page: image_wire.page_of_images(by_wire[id(page)], token), lambda: None)
    )
    print(
        f"{len(docs)} docs, {sum(d.count(b'digest') for d in docs) - len(docs)} blobs; "
        f"C encoder {'built' if image_wire.NATIVE is not None else 'NOT built'}"
    )
    for name, encode, before in cases:
        rounds = [per_page(pages, encode, before) for _ in range(args.rounds)]
        best = min(rounds, key=statistics.median)
        print(f"{name:>14}: {min(best):.3f} / {statistics.median(best):.3f} ms a page of {PAGE}")


if __name__ == "__main__":
    main()
