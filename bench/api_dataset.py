"""Fill an index with the simulator's generated registry, fast: COPY, no HTTP, no ingest.

The rows are what the ingest writes for the same registry (the stored ``doc`` is
the simulator's JSON of the image, byte for byte), so a List against the mirror
and against the simulator answer the same images. Images are generated in
worker processes (the generator is pure Python) and copied in chunks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from mirror.listing import created_at_ns
from mirror.upstream.simulator.generator import RegistryModel

CHUNK = 20_000
IMAGE_COLUMNS = (
    "id",
    "name",
    "registry_id",
    "folder_id",
    "digest",
    "compressed_size",
    "created_at",
    "tags",
    "doc",
    "content_hash",
    "created_ns",  # written by the ingest since migration 021 (no longer generated)
)
BLOB_COLUMNS = ("image_id", "registry_id", "position", "kind", "digest", "blob_id", "size")

FILL_BLOBS = """
INSERT INTO blobs (digest, size, ref_count)
SELECT digest, max(size), count(*) FROM image_blobs GROUP BY digest
"""
FILL_REGISTRIES = """
INSERT INTO registries (registry_id, folder_id)
SELECT DISTINCT registry_id, folder_id FROM images WHERE folder_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_models: dict[tuple[int, int], RegistryModel] = {}


def _model(images: int, seed: int) -> RegistryModel:
    key = (images, seed)
    if key not in _models:
        _models[key] = RegistryModel(images=images, seed=seed)
    return _models[key]


def image_rows(
    model: RegistryModel, start: int, stop: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The images and image_blobs rows of generated images ``start <= ref < stop``."""
    images: list[tuple[Any, ...]] = []
    blobs: list[tuple[Any, ...]] = []
    for sim in model.iter_images(start, stop):
        doc = orjson.dumps(sim.to_json()).decode()
        registry = sim.name.split("/", 1)[0]
        folder = model.folder_ids[model.folder_of_registry(model.registry_index(registry) or 0)]
        created = datetime.fromtimestamp(sim.created_ns // 1000 / 1e6, tz=UTC)
        images.append(
            (
                sim.id,
                sim.name,
                registry,
                folder,
                sim.digest,
                sim.compressed_size,
                created,
                list(sim.tags),
                doc,
                hashlib.blake2b(doc.encode(), digest_size=16).digest(),
                created_at_ns(sim.to_json()["createdAt"]),
            )
        )
        for position, (blob_id, digest, size) in enumerate((sim.config, *sim.layers)):
            kind = "c" if position == 0 else "l"
            blobs.append((sim.id, registry, position, kind, digest, blob_id, size))
    return images, blobs


def _chunk(args: tuple[int, int, int, int]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
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
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for image_batch, blob_batch in pool.map(_chunk, jobs):
            await conn.copy_records_to_table("images", records=image_batch, columns=IMAGE_COLUMNS)
            await conn.copy_records_to_table(
                "image_blobs", records=blob_batch, columns=BLOB_COLUMNS
            )
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
    await conn.execute("ANALYZE image_blobs")
    await conn.execute("ANALYZE blobs")
    return time.perf_counter() - started
