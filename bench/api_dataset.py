"""Fill an index with the simulator's generated registry, fast: COPY, no HTTP, no ingest.

The rows are what the ingest writes for the same registry (the stored ``doc`` is
the simulator's JSON of the image, byte for byte), so a List against the mirror
and against the simulator answer the same images. Images are generated in
worker processes (the generator is pure Python) and copied in chunks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import asyncpg

from mirror.ingest.staging import IMAGE_COLUMNS, image_record, page_images
from mirror.model import digest_text
from mirror.upstream.simulator.generator import RegistryModel

CHUNK = 20_000
# The ingest's own rows and column order (mirror.ingest.staging): a column the
# schema gains reaches this loader with the ingest, not by copying a list.

FILL_BLOBS = """
INSERT INTO blobs (digest, size, ref_count)
SELECT u.digest, max(u.size), count(*)
FROM images AS i CROSS JOIN LATERAL unnest(i.blob_digests, i.blob_sizes) AS u (digest, size)
GROUP BY u.digest
"""
HAS_REGISTRY_NUMBERS = "SELECT to_regclass('image_registries') IS NOT NULL"
NUMBER_REGISTRIES = """
SELECT name, image_registry(name) FROM unnest($1::text[]) AS r (name) ORDER BY name
"""
FILL_REGISTRIES = """
INSERT INTO registries (registry_id, folder_id)
SELECT DISTINCT split_part(name, '/', 1) AS registry_id, folder_id FROM images
WHERE folder_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_models: dict[tuple[int, int], RegistryModel] = {}


def _model(images: int, seed: int) -> RegistryModel:
    key = (images, seed)
    if key not in _models:
        _models[key] = RegistryModel(images=images, seed=seed)
    return _models[key]


def image_rows(model: RegistryModel, start: int, stop: int) -> list[tuple[Any, ...]]:
    """The images rows (blob references included) of generated images ``start <= ref < stop``.

    Built by the ingest's record builders from the simulator's JSON: the staging
    table's columns are the ``images`` table's.
    """
    images: list[tuple[Any, ...]] = []
    for sim in model.iter_images(start, stop):
        registry = sim.name.split("/", 1)[0]
        folder = model.folder_ids[model.folder_of_registry(model.registry_index(registry) or 0)]
        (item,) = page_images([sim.to_json()])
        images.append(image_record(item, folder))
    return images


def _chunk(args: tuple[int, int, int, int]) -> list[tuple[Any, ...]]:
    images, seed, start, stop = args
    return image_rows(_model(images, seed), start, stop)


def _ranges(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, chunk):
        yield start, min(total, start + chunk)


async def load_registry(
    conn: asyncpg.Connection, *, images: int, seed: int, workers: int = 2, progress: bool = True
) -> float:
    """COPY the generated registry into an empty, migrated index; returns the seconds taken."""
    started = time.perf_counter()
    # Other areas' triggers (the stats aggregates) would make this load a hundred
    # times slower and are not what the API reads: they stay off for this session.
    await conn.execute("SET session_replication_role = replica")
    jobs = [(images, seed, start, stop) for start, stop in _ranges(images, CHUNK)]
    done = 0
    # The staging records name a registry by its id and hold the digest's key; since
    # sql/120 so does the images row, with the registry's number. Before (the upgrade
    # tests load older schemas), the row held the id and the digest's text.
    numbered = await conn.fetchval(HAS_REGISTRY_NUMBERS)
    columns = tuple("registry" if c == "registry_id" and numbered else c for c in IMAGE_COLUMNS)
    at, digest_at = IMAGE_COLUMNS.index("registry_id"), IMAGE_COLUMNS.index("digest")
    numbers: dict[str, int] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for image_batch in pool.map(_chunk, jobs):
            if numbered:
                new = sorted({r[at] for r in image_batch} - numbers.keys())
                if new:
                    numbers |= dict(await conn.fetch(NUMBER_REGISTRIES, new))
                rows = [(*r[:at], numbers[r[at]], *r[at + 1 :]) for r in image_batch]
            else:
                rows = [
                    (*r[:digest_at], digest_text(r[digest_at]), *r[digest_at + 1 :])
                    for r in image_batch
                ]
            await conn.copy_records_to_table("images", records=rows, columns=columns)
            done += len(image_batch)
            if progress:
                rate = done / (time.perf_counter() - started)
                print(f"\r  loaded {done:,}/{images:,} images ({rate:,.0f}/s)", end="", flush=True)
    if progress:
        print()
    await conn.execute(FILL_BLOBS)
    await conn.execute("SET session_replication_role = DEFAULT")
    await conn.execute(FILL_REGISTRIES)
    await conn.execute("ANALYZE images")
    await conn.execute("ANALYZE blobs")
    return time.perf_counter() - started
