"""The simulator's generated registry: deterministic, cloud-shaped, realistically shared."""

from __future__ import annotations

import collections
import itertools
import re
import time
import tracemalloc

import orjson
import pytest

from mirror.model import REPOSITORY_NAME_RE, Image
from mirror.upstream.simulator.generator import RegistryModel
from mirror.upstream.simulator.images import SimImage
from mirror.upstream.simulator.wire import rfc3339

CLOUD_ID = re.compile(r"crp[0-9a-z]{17}")
FOLDER_ID = re.compile(r"b1g[0-9a-z]{17}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@pytest.fixture(scope="module")
def model() -> RegistryModel:
    return RegistryModel(images=20_000, seed=11, folders=3, registries_per_folder=2)


@pytest.fixture(scope="module")
def images(model: RegistryModel) -> list[SimImage]:
    return list(model.iter_images(0, model.images))


def test_same_seed_same_registry() -> None:
    a = RegistryModel(images=5_000, seed=3)
    b = RegistryModel(images=5_000, seed=3)
    assert a.folder_ids == b.folder_ids and a.registry_ids == b.registry_ids
    assert a.repo_names == b.repo_names
    for ref in (0, 1, 777, 4_999):
        assert a.image(ref) == b.image(ref)


def test_other_seed_other_registry() -> None:
    a = RegistryModel(images=5_000, seed=3)
    b = RegistryModel(images=5_000, seed=4)
    assert a.registry_ids != b.registry_ids
    assert a.image(0).digest != b.image(0).digest


def test_random_access_equals_iteration(model: RegistryModel, images: list[SimImage]) -> None:
    for ref in (0, 5, 1234, model.images - 1):
        assert model.image(ref) == images[ref]


def test_ids_are_cloud_shaped_ascending_and_decodable(
    model: RegistryModel, images: list[SimImage]
) -> None:
    ids = [image.id for image in images]
    assert all(CLOUD_ID.fullmatch(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(CLOUD_ID.fullmatch(r) for r in model.registry_ids)
    assert all(FOLDER_ID.fullmatch(f) for f in model.folder_ids)
    for ref in (0, 9, 15_000):
        assert model.ref_of_id(ids[ref]) == ref
    assert model.ref_of_id("crp" + "0" * 17) is None
    assert model.ref_of_id(ids[5][:-1] + ("a" if ids[5][-1] != "a" else "b")) is None
    assert model.ref_of_id(ids[5].upper()) is None
    assert model.ref_of_id("xyz") is None


def test_names_are_registry_and_path_unique_per_registry(model: RegistryModel) -> None:
    assert len(set(model.repo_names)) == len(model.repo_names)
    for index, name in enumerate(model.repo_names):
        registry_id, _, path = name.partition("/")
        assert registry_id == model.registry_ids[model.repo_registry[index]]
        assert path and REPOSITORY_NAME_RE.fullmatch(name)


def test_scopes_are_contiguous_and_cover_everything(model: RegistryModel) -> None:
    folders = [model.folder_refs(f) for f in range(len(model.folder_ids))]
    assert folders[0].start == 0 and folders[-1].stop == model.images
    assert all(a.stop == b.start for a, b in itertools.pairwise(folders))
    for registry in range(len(model.registry_ids)):
        refs = model.registry_refs(registry)
        folder = folders[model.folder_of_registry(registry)]
        assert folder.start <= refs.start <= refs.stop <= folder.stop


def test_tags_unique_within_a_repository_latest_on_newest_some_untagged(
    model: RegistryModel, images: list[SimImage]
) -> None:
    by_repo: dict[int, list[SimImage]] = collections.defaultdict(list)
    for image in images:
        by_repo[image.repo].append(image)
    untagged = 0
    for repo, members in by_repo.items():
        tags = [tag for image in members for tag in image.tags]
        assert len(tags) == len(set(tags)), model.repo_names[repo]
        assert "latest" in members[-1].tags
        untagged += sum(1 for image in members if not image.tags)
    assert 0.02 * len(images) < untagged < 0.4 * len(images)


def test_every_image_has_a_config_and_sums_its_layers(images: list[SimImage]) -> None:
    for image in images[:2000]:
        assert CLOUD_ID.fullmatch(image.config[0]) and DIGEST.fullmatch(image.config[1])
        assert 1000 < image.config[2] < 70_000
        assert image.layers and image.compressed_size == sum(size for _, _, size in image.layers)
        assert all(
            CLOUD_ID.fullmatch(i) and DIGEST.fullmatch(d) and s > 0 for i, d, s in image.layers
        )


def test_a_digest_has_one_size_and_one_blob_id_per_registry(
    model: RegistryModel, images: list[SimImage]
) -> None:
    sizes: dict[str, int] = {}
    ids: dict[tuple[int, str], str] = {}
    registries_of: dict[str, set[int]] = collections.defaultdict(set)
    for image in images:
        registry = model.repo_registry[image.repo]
        for blob_id, digest, size in (image.config, *image.layers):
            assert sizes.setdefault(digest, size) == size
            assert ids.setdefault((registry, digest), blob_id) == blob_id
            registries_of[digest].add(registry)
    shared = [d for d, regs in registries_of.items() if len(regs) > 1]
    assert shared, "base layers are shared across registries"
    for digest in shared[:50]:
        blob_ids = {ids[(r, digest)] for r in registries_of[digest]}
        assert len(blob_ids) == len(registries_of[digest]), "a different blob id in each registry"


def test_base_layers_are_shared_across_folders(
    model: RegistryModel, images: list[SimImage]
) -> None:
    folders_of: dict[str, set[int]] = collections.defaultdict(set)
    for image in images:
        folder = model.folder_of_registry(model.repo_registry[image.repo])
        folders_of[image.layers[0][1]].add(folder)
    popular = [d for d, folders in folders_of.items() if len(folders) == len(model.folder_ids)]
    assert popular
    # a few popular bases account for most images
    counts = collections.Counter(image.layers[0][1] for image in images)
    top = sum(n for _, n in counts.most_common(5))
    assert top > 0.4 * len(images)


def test_siblings_share_leading_layers_and_have_unique_tops(images: list[SimImage]) -> None:
    pairs = shared_prefix = 0
    tops: set[str] = set()
    for before, after in itertools.pairwise(images):
        top = after.layers[-1][1]
        if before.repo != after.repo:
            continue
        pairs += 1
        if before.layers[0][1] == after.layers[0][1]:
            shared_prefix += 1
    for image in images:
        tops.add(image.config[1])
    assert shared_prefix > 0.8 * pairs
    assert len(tops) == len(images), "every config blob is the image's own"
    assert top


def test_sizes_are_heavy_tailed(images: list[SimImage]) -> None:
    sizes = sorted({digest: size for image in images for _, digest, size in image.layers}.values())
    median = sizes[len(sizes) // 2]
    assert sizes[-1] > 100 * median
    assert sizes[-1] > 500 << 20  # some layers of hundreds of megabytes


def test_created_at_precisions_and_order(images: list[SimImage]) -> None:
    digits: collections.Counter[int] = collections.Counter()
    for image in images:
        text = rfc3339(image.created_ns)
        fraction = text[20:-1] if "." in text else ""
        digits[len(fraction)] += 1
    assert set(digits) == {0, 3, 6, 9}
    for before, after in itertools.pairwise(images):
        if before.repo == after.repo:
            assert before.created_ns < after.created_ns


def test_json_and_domain_type_agree(images: list[SimImage]) -> None:
    for image in images[:300]:
        assert Image.from_json(image.to_json()) == image.to_image()
        data = image.to_json()
        assert list(data)[:6] == ["id", "name", "digest", "compressedSize", "config", "layers"]
        assert ("tags" in data) == bool(image.tags)


def test_sort_values_agree_with_images(model: RegistryModel, images: list[SimImage]) -> None:
    for ref, (repo, digest, created) in zip(
        range(100, 400), model.sort_values(100, 400), strict=True
    ):
        image = images[ref]
        assert repo == image.repo
        assert digest == int(image.digest[7:], 16)
        assert created == image.created_ns
        assert model.sort_fields_of(ref) == (image.name, image.digest, image.created_ns)


@pytest.mark.parametrize("n", [1, 10, 11, 100])
def test_tiny_registries(n: int) -> None:
    model = RegistryModel(images=n, seed=1, folders=2, registries_per_folder=3)
    images = list(model.iter_images(0, n))
    assert len(images) == n and len({i.id for i in images}) == n


def test_a_million_images_build_fast_in_little_memory() -> None:
    """Sanity, not a benchmark: the layout is per repository, never per image."""
    tracemalloc.start()
    started = time.perf_counter()
    model = RegistryModel(images=1_000_000, seed=1)
    built = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"1,000,000 images: model in {built:.2f} s, peak {peak / 2**20:.1f} MiB")
    assert peak < 64 << 20
    assert model.image(999_999).id == model.image_id(999_999)


def test_fast_json_text_is_byte_identical(model: RegistryModel, images: list[SimImage]) -> None:
    """The List fast path writes exactly what serializing the image would."""
    for image in images[:: len(images) // 700]:
        text = model.image_json(image.ref)
        assert text == image.json_text() == orjson.dumps(image.to_json()).decode()
    assert orjson.loads(model.image_json(3, ("a", "b")))["tags"] == ["a", "b"]
    assert "tags" not in orjson.loads(model.image_json(3, ()))
