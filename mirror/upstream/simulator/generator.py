"""The generated registry: folders -> registries -> repositories -> images, by seed.

Nothing per image is stored. The layout (which repository holds which images)
is a few arrays over *refs*: generated image number ``ref`` lives in repository
``r`` when ``repo_start[r] <= ref < repo_start[r + 1]``, repositories of a
registry are contiguous, and registries of a folder too, so every List scope is
one range of refs. Image ``ref`` itself (id, layers, tags, time) is a pure
function of ``(seed, repository, version k)`` computed when asked for.

Ids grow with ``ref`` (``id = base + ref * stride + jitter`` in base 36), so the
default List order, id ascending, is ref order, and an id decodes back to its ref
without a table.

Realism, where it matters to a mirror:

- layers: a base stack from a popular few (shared across registries and
  folders), then dependency layers that change every few versions (siblings in
  a repository share leading layers), then one or two layers unique to the image;
- sizes heavy-tailed (log-normal; CUDA bases of gigabytes), and a blob's size is
  a function of its digest, as content addressing demands;
- a config blob per image; the same digest has a different blob id in each
  registry (blob ids are per registry, digests are global);
- tags unique within a repository, ``latest`` on the newest, some images untagged;
- ``createdAt`` with nanoseconds, microseconds, milliseconds or whole seconds.
"""

from __future__ import annotations

import bisect
import random
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import blake2b as _blake2b
from typing import NamedTuple

from mirror.upstream.simulator import catalog
from mirror.upstream.simulator.images import (
    BlobTuple,
    Part,
    SimImage,
    blob_from,
    blob_json_text,
    config_blob,
    lognormal_size,
    make_part,
    size_table,
    unique_blob_json,
)
from mirror.upstream.simulator.wire import (
    ID_SPACE,
    digest_from_bytes,
    hash_bytes,
    id_from_bytes,
    id_from_int,
    int_from_id,
    rfc3339,
    unit_float,
)

EPOCH_NS = 1_735_689_600 * 1_000_000_000  # 2025-01-01T00:00:00Z: generated history ends here
DAY_NS = 86_400 * 1_000_000_000
HISTORY_NS = 3 * 365 * DAY_NS  # repositories start up to three years before EPOCH
MAX_IMAGES = 10_000_000
IMAGE_ID_PREFIX = "crp"
REGISTRY_ID_PREFIX = "crp"
FOLDER_ID_PREFIX = "b1g"
BASE_REPO_SHARE = 0.04  # repositories that mirror a base stack itself (``base/python``)

_CACHE_LIMIT = 200_000
_SHARED_CACHE_LIMIT = 20_000  # entries carry JSON text: about 1 KB each
_NEVER = 576 * 1_000_000  # a base period longer than any repository: the base never changes
_GOLDEN = 0x9E3779B97F4A7C15
# size tables of the blobs only one image has (see ``config_blob`` and ``_top_blobs``)
_CONFIG_SIZES = size_table(6 * catalog.KB, 0.5, 1200, 64 * catalog.KB)
_TOP_SIZES = size_table(300 * catalog.KB, 1.8)
_META_SIZES = size_table(2 * catalog.KB, 1.0)
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class RepoInfo:
    """A repository: ``first``/``count`` are its generated images (``first`` -1 if it has none)."""

    index: int
    registry: int
    name: str
    first: int
    count: int


class _Traits(NamedTuple):
    base_repo: bool
    stack: int
    base_version0: int
    base_period: int
    dep_periods: tuple[int, ...]
    share_period: int
    top_layers: int
    tag_style: int
    variant: str
    stable: bool
    untagged_per_256: int
    start_ns: int
    step_ns: int


_STACK_INDEX = {stack.name: i for i, stack in enumerate(catalog.STACKS)}
_STACK_WEIGHTS = [stack.popularity for stack in catalog.STACKS]


class RegistryModel:
    """The generated registry, immutable: layout arrays and pure image functions.

    ``images`` is the number of generated images (10 to 10,000,000). Building it
    costs a few arrays over repositories, not images.
    """

    def __init__(
        self, *, images: int, seed: int, folders: int = 2, registries_per_folder: int = 2
    ) -> None:
        if not 1 <= images <= MAX_IMAGES:
            raise ValueError(f"images must be 1..{MAX_IMAGES}, got {images}")
        if folders < 1 or registries_per_folder < 1:
            raise ValueError("folders and registries_per_folder must be at least 1")
        self.images = images
        self.seed = seed
        self.folder_ids = [
            id_from_bytes(FOLDER_ID_PREFIX, hash_bytes(f"{seed}:folder:{f}"))
            for f in range(folders)
        ]
        n_registries = folders * registries_per_folder
        self.registry_ids = [
            id_from_bytes(REGISTRY_ID_PREFIX, hash_bytes(f"{seed}:registry:{r}"))
            for r in range(n_registries)
        ]
        self.registry_folder = [r // registries_per_folder for r in range(n_registries)]
        self._registries_per_folder = registries_per_folder
        self._folder_index = {fid: f for f, fid in enumerate(self.folder_ids)}
        self._registry_index = {rid: r for r, rid in enumerate(self.registry_ids)}

        layout = random.Random(f"{seed}:layout")
        n_repos = max(1, min(images, round(images**0.85 / 4)))
        repos_per_registry = _split(
            n_repos,
            [layout.paretovariate(1.3) for _ in range(n_registries)],
            minimum=1 if n_repos >= n_registries else 0,
        )
        # log-normal repository sizes: many with a handful of images, a few with thousands
        image_counts = _split(
            images, [min(layout.lognormvariate(0.0, 1.7), 300.0) for _ in range(n_repos)], minimum=1
        )
        self.registry_repo_start = array("q", [0])
        for count in repos_per_registry:
            self.registry_repo_start.append(self.registry_repo_start[-1] + count)
        self.repo_start = array("q", [0])
        for count in image_counts:
            self.repo_start.append(self.repo_start[-1] + count)
        self.repo_registry = array("i")
        self.repo_names: list[str] = []
        self._base_repo_stack: dict[int, int] = {}
        for registry, count in enumerate(repos_per_registry):
            self._name_repositories(layout, registry, count)
        self._repo_index = {name: r for r, name in enumerate(self.repo_names)}

        # ids: base + ref * stride + jitter, spread over half the id space
        self._id_stride = (ID_SPACE // 2) // images
        self._id_base = int.from_bytes(hash_bytes(f"{seed}:ids")[:16], "big") % (ID_SPACE // 4)
        self._id_mix = int.from_bytes(hash_bytes(f"{seed}:jitter")[:8], "big")

        self._traits: dict[int, _Traits] = {}
        self._stack_layers: dict[tuple[int, int], tuple[tuple[str, int], ...]] = {}
        self._base_parts: dict[tuple[int, int, int], Part] = {}
        self._shared_parts: dict[tuple[int, int], Part] = {}
        self._last_repo: tuple[RepoInfo, _Traits] | None = None  # image_json's last
        self._blob_ids: dict[tuple[int, str], str] = {}
        self._dep_blobs: dict[tuple[int, int, int], tuple[BlobTuple, str]] = {}
        self._name_ranks: array[int] | None = None

    # -- layout ------------------------------------------------------------------

    def _name_repositories(self, rng: random.Random, registry: int, count: int) -> None:
        prefix = self.registry_ids[registry] + "/"
        used: set[str] = set()
        for _ in range(count):
            repo = len(self.repo_names)
            if rng.random() < BASE_REPO_SHARE:
                stack = rng.choices(range(len(catalog.STACKS)), weights=_STACK_WEIGHTS)[0]
                self._base_repo_stack[repo] = stack
                path = f"{rng.choice(('base', 'mirror', 'library'))}/{catalog.STACKS[stack].name}"
            else:
                path = _app_path(rng)
            unique, n = path, 1
            while unique in used:
                n += 1
                unique = f"{path}-{n}"
            used.add(unique)
            self.repo_names.append(prefix + unique)
            self.repo_registry.append(registry)

    @property
    def repository_count(self) -> int:
        return len(self.repo_names)

    def folder_of_registry(self, registry: int) -> int:
        return self.registry_folder[registry]

    def folder_registries(self, folder: int) -> range:
        start = folder * self._registries_per_folder
        return range(start, start + self._registries_per_folder)

    def registry_repos(self, registry: int) -> range:
        return range(self.registry_repo_start[registry], self.registry_repo_start[registry + 1])

    def folder_index(self, folder_id: str) -> int | None:
        return self._folder_index.get(folder_id)

    def registry_index(self, registry_id: str) -> int | None:
        return self._registry_index.get(registry_id)

    def repo_index(self, name: str) -> int | None:
        return self._repo_index.get(name)

    def repo(self, index: int) -> RepoInfo:
        start, stop = self.repo_start[index], self.repo_start[index + 1]
        return RepoInfo(
            index, self.repo_registry[index], self.repo_names[index], start, stop - start
        )

    def repo_of(self, ref: int) -> int:
        return bisect.bisect_right(self.repo_start, ref) - 1

    def repo_refs(self, repo: int) -> range:
        return range(self.repo_start[repo], self.repo_start[repo + 1])

    def registry_refs(self, registry: int) -> range:
        repos = self.registry_repos(registry)
        return range(self.repo_start[repos.start], self.repo_start[repos.stop])

    def folder_refs(self, folder: int) -> range:
        registries = self.folder_registries(folder)
        first = self.registry_repo_start[registries.start]
        last = self.registry_repo_start[registries.stop]
        return range(self.repo_start[first], self.repo_start[last])

    # -- ids -----------------------------------------------------------------------

    def image_id(self, ref: int) -> str:
        jitter = ((ref * _GOLDEN + self._id_mix) & _MASK64) % self._id_stride
        return id_from_int(IMAGE_ID_PREFIX, self._id_base + ref * self._id_stride + jitter)

    def ref_of_id(self, image_id: str) -> int | None:
        """The generated image an id names, or None (whether or not it was deleted since)."""
        value = int_from_id(IMAGE_ID_PREFIX, image_id)
        if value is None or value < self._id_base:
            return None
        ref = (value - self._id_base) // self._id_stride
        if ref >= self.images or self.image_id(ref) != image_id:
            return None
        return ref

    def is_generated_id(self, image_id: str) -> bool:
        """Whether ``image_id`` falls in the generated ids' band (pushed ids must not)."""
        value = int_from_id(IMAGE_ID_PREFIX, image_id)
        return value is not None and self._id_base <= value < self._id_base + ID_SPACE // 2

    # -- images ----------------------------------------------------------------------

    def image(self, ref: int) -> SimImage:
        """Generated image ``ref`` with its generated tags."""
        repo = self.repo(self.repo_of(ref))
        return self.build(repo, ref - repo.first, ref=ref, image_id=self.image_id(ref))

    def iter_images(self, start: int, stop: int) -> Iterator[SimImage]:
        """Generated images ``start <= ref < stop`` in ref (= id) order."""
        ref = start
        while ref < stop:
            repo = self.repo(self.repo_of(ref))
            end = min(stop, repo.first + repo.count)
            for r in range(ref, end):
                yield self.build(repo, r - repo.first, ref=r, image_id=self.image_id(r))
            ref = end

    def build(
        self,
        repo: RepoInfo,
        k: int,
        *,
        ref: int,
        image_id: str,
        created_ns: int | None = None,
        tags: tuple[str, ...] | None = None,
        count: int | None = None,
    ) -> SimImage:
        """Version ``k`` of ``repo``: generated, or pushed later (then ``created_ns``/``tags`` given).

        ``count`` is how many versions the repository has (default: its generated ones);
        the newest carries ``latest``.
        """
        traits = self._repo_traits(repo)
        key = f"{self.seed}:{repo.index}:{k}"
        manifest = hash_bytes("m:" + key)
        unique = hash_bytes("b:" + key)  # 64 bytes: the config blob, then the top layer
        if created_ns is None:
            created_ns = _created_ns(traits, k, manifest)
        if tags is None:
            tags = self._default_tags(
                traits, k, repo.count if count is None else count, manifest, created_ns
            )
        shared = self._shared_part(repo, traits, k)
        layers = shared.blobs + self._top_blobs(traits, key, unique)
        return SimImage(
            ref=ref,
            repo=repo.index,
            id=image_id,
            name=repo.name,
            digest=digest_from_bytes(manifest),
            compressed_size=sum(blob[2] for blob in layers),
            config=config_blob(unique),
            layers=layers,
            tags=tags,
            created_ns=created_ns,
        )

    def image_json(self, ref: int, tags: tuple[str, ...] | None = None) -> str:
        """Generated image ``ref`` as JSON text, fast (``tags`` replace the generated ones).

        Equal to ``image(ref).json_text()``: the same hashes and tables, written straight
        to text; layers below the top are serialized once for all the siblings sharing them.
        """
        last = self._last_repo
        if last is None or not last[0].first <= ref < last[0].first + last[0].count:
            repo = self.repo(self.repo_of(ref))
            last = self._last_repo = (repo, self._repo_traits(repo))
        repo, traits = last
        k = ref - repo.first
        key = f"{self.seed}:{repo.index}:{k}"
        manifest = _blake2b(("m:" + key).encode(), digest_size=64).digest()
        unique = _blake2b(("b:" + key).encode(), digest_size=64).digest()
        created_ns = _created_ns(traits, k, manifest)
        if tags is None:
            tags = self._default_tags(traits, k, repo.count, manifest, created_ns)
        shared = self._shared_part(repo, traits, k)
        config_json, _ = unique_blob_json(unique, _CONFIG_SIZES)
        if traits.base_repo:
            layers_json, size = shared.json, shared.size
        else:
            top_json, top_size = unique_blob_json(unique[32:], _TOP_SIZES)
            size = shared.size + top_size
            if traits.top_layers == 2:
                meta_json, meta_size = unique_blob_json(hash_bytes("t:" + key), _META_SIZES)
                top_json = f"{top_json},{meta_json}"
                size += meta_size
            layers_json = f"{shared.json},{top_json}" if shared.json else top_json
        tags_json = ',"tags":["' + '","'.join(tags) + '"]' if tags else ""
        return (
            f'{{"id":"{self.image_id(ref)}","name":"{repo.name}",'
            f'"digest":"sha256:{manifest[:32].hex()}","compressedSize":"{size}",'
            f'"config":{config_json},"layers":[{layers_json}]'
            f'{tags_json},"createdAt":"{rfc3339(created_ns)}"}}'
        )

    def _shared_part(self, repo: RepoInfo, traits: _Traits, k: int) -> Part:
        """The layers of version ``k`` below its own top: base stack, then dependencies."""
        if traits.base_repo:
            return self._base_part(repo.registry, traits, k)
        key = (repo.index, k // traits.share_period)
        part = self._shared_parts.get(key)
        if part is None:
            # the base's text is reused, and each dependency's: a miss serializes nothing
            base = self._base_part(repo.registry, traits, k)
            blobs, texts, size = base.blobs, [base.json] if base.json else [], base.size
            for j, period in enumerate(traits.dep_periods):
                blob, text = self._dep_blob(repo.registry, repo.index, j, k // period)
                blobs += (blob,)
                texts.append(text)
                size += blob[2]
            part = Part(blobs, ",".join(texts), size)
            if len(self._shared_parts) > _SHARED_CACHE_LIMIT:
                self._shared_parts.clear()
            self._shared_parts[key] = part
        return part

    def _top_blobs(self, traits: _Traits, key: str, unique: bytes) -> tuple[BlobTuple, ...]:
        """The layers only this image has: one, or two (a small metadata layer on top)."""
        if traits.base_repo:
            return ()
        top = blob_from(unique[32:], 300 * catalog.KB, 1.8)
        if traits.top_layers == 1:
            return (top,)
        return (top, blob_from(hash_bytes("t:" + key), 2 * catalog.KB, 1.0))

    def default_tags(self, repo: RepoInfo, k: int, count: int) -> tuple[str, ...]:
        """The tags version ``k`` gets when the repository has ``count`` versions."""
        traits = self._repo_traits(repo)
        manifest = hash_bytes(f"m:{self.seed}:{repo.index}:{k}")
        return self._default_tags(traits, k, count, manifest, _created_ns(traits, k, manifest))

    def sort_fields_of(self, ref: int) -> tuple[str, str, int]:
        """(name, digest, created_ns) of generated image ``ref``: what an ``orderBy`` compares."""
        repo = self.repo(self.repo_of(ref))
        k = ref - repo.first
        manifest = hash_bytes(f"m:{self.seed}:{repo.index}:{k}")
        return (
            repo.name,
            digest_from_bytes(manifest),
            _created_ns(self._repo_traits(repo), k, manifest),
        )

    def sort_values(
        self, start: int, stop: int, *, hashed: bool = True
    ) -> Iterator[tuple[int, int, int]]:
        """(repository, digest as an int, created_ns) of refs ``start <= ref < stop``, cheaply.

        The digest as a big-endian int orders exactly as its hex text does. With
        ``hashed=False`` only the repository is computed (digest and time are 0).
        """
        ref = start
        while ref < stop:
            repo = self.repo(self.repo_of(ref))
            end = min(stop, repo.first + repo.count)
            if not hashed:
                for _ in range(ref, end):
                    yield repo.index, 0, 0
                ref = end
                continue
            traits = self._repo_traits(repo)
            prefix = f"m:{self.seed}:{repo.index}:"
            for k in range(ref - repo.first, end - repo.first):
                manifest = hash_bytes(prefix + str(k))
                digest = int.from_bytes(manifest[:32], "big")
                yield repo.index, digest, _created_ns(traits, k, manifest)
            ref = end

    def repo_name_ranks(self) -> array[int]:
        """Each repository's rank in name order (computed once)."""
        if self._name_ranks is None:
            ranks = array("q", bytes(8 * len(self.repo_names)))
            for rank, index in enumerate(
                sorted(range(len(self.repo_names)), key=self.repo_names.__getitem__)
            ):
                ranks[index] = rank
            self._name_ranks = ranks
        return self._name_ranks

    # -- the parts of an image ---------------------------------------------------------

    def _repo_traits(self, repo: RepoInfo) -> _Traits:
        traits = self._traits.get(repo.index)
        if traits is not None:
            return traits
        rng = random.Random(f"{self.seed}:repo:{repo.index}")
        base_stack = self._base_repo_stack.get(repo.index)
        stack = base_stack
        if stack is None:
            stack = rng.choices(range(len(catalog.STACKS)), weights=_STACK_WEIGHTS)[0]
        start_ns = EPOCH_NS - rng.randrange(DAY_NS, HISTORY_NS)
        step_ns = (EPOCH_NS - start_ns) // (repo.count + 1) if repo.count else DAY_NS
        n_deps = rng.choice((0, 1, 2, 2, 3, 3, 4))
        # every period divides the longer ones, so all layers below the top change only
        # when k // share_period does: one cache entry serves that many siblings
        base_period = rng.choice((24, 48, 144, 576, _NEVER))
        dep_periods = tuple(
            sorted((rng.choice((2, 4, 12, 48, 144, 576)) for _ in range(n_deps)), reverse=True)
        )
        traits = _Traits(
            base_repo=base_stack is not None,
            stack=stack,
            base_version0=rng.randrange(catalog.STACK_VERSIONS),
            base_period=base_period,
            dep_periods=dep_periods,
            share_period=min((base_period, *dep_periods)),
            top_layers=1 if rng.random() < 0.7 else 2,
            tag_style=rng.randrange(4),
            variant=rng.choice(catalog.VARIANTS) if rng.random() < 0.15 else "",
            stable=rng.random() < 0.3,
            untagged_per_256=rng.choice((0, 20, 40, 80)),
            start_ns=start_ns,
            step_ns=step_ns,
        )
        if len(self._traits) > _CACHE_LIMIT:
            self._traits.clear()
        self._traits[repo.index] = traits
        return traits

    def _base_part(self, registry: int, traits: _Traits, k: int) -> Part:
        if traits.base_repo:
            version = k % catalog.STACK_VERSIONS
        else:
            version = (traits.base_version0 + k // traits.base_period) % catalog.STACK_VERSIONS
        key = (registry, traits.stack, version)
        part = self._base_parts.get(key)
        if part is None:
            part = make_part(
                tuple(
                    (self._blob_id(registry, digest), digest, size)
                    for digest, size in self._stack_layers_of(traits.stack, version)
                )
            )
            if len(self._base_parts) > _CACHE_LIMIT:
                self._base_parts.clear()
            self._base_parts[key] = part
        return part

    def _stack_layers_of(self, stack: int, version: int) -> tuple[tuple[str, int], ...]:
        """(digest, size) of every layer of a stack release, its parents' first."""
        cached = self._stack_layers.get((stack, version))
        if cached is not None:
            return cached
        spec = catalog.STACKS[stack]
        parent: tuple[tuple[str, int], ...] = ()
        if spec.parent is not None:
            parent = self._stack_layers_of(_STACK_INDEX[spec.parent], version)
        own = []
        for j, median in enumerate(spec.layers):
            raw = hash_bytes(f"{self.seed}:stack:{spec.name}:{version}:{j}")
            # releases of a stack differ a little in size, not in shape
            size = max(100, int(median * (0.9 + 0.2 * unit_float(raw[40:]))))
            own.append((digest_from_bytes(raw), size))
        layers = parent + tuple(own)
        self._stack_layers[(stack, version)] = layers
        return layers

    def _dep_blob(self, registry: int, repo: int, j: int, version: int) -> tuple[BlobTuple, str]:
        """Dependency layer ``j`` of a repository at a version, and its JSON text."""
        key = (repo, j, version)  # a repository is in one registry
        cached = self._dep_blobs.get(key)
        if cached is None:
            raw = hash_bytes(f"{self.seed}:dep:{repo}:{j}:{version}")
            digest = digest_from_bytes(raw)
            blob = (
                self._blob_id(registry, digest),
                digest,
                lognormal_size(raw[40:42], 4 * catalog.MB, 1.4),
            )
            cached = (blob, blob_json_text(blob))
            if len(self._dep_blobs) > _CACHE_LIMIT:
                self._dep_blobs.clear()
            self._dep_blobs[key] = cached
        return cached

    def _blob_id(self, registry: int, digest: str) -> str:
        """A shared blob's id in a registry: each registry has its own id for the same digest."""
        key = (registry, digest)
        blob_id = self._blob_ids.get(key)
        if blob_id is None:
            blob_id = id_from_bytes("crp", hash_bytes(f"{self.seed}:blob:{registry}:{digest}"))
            if len(self._blob_ids) > _CACHE_LIMIT:
                self._blob_ids.clear()
            self._blob_ids[key] = blob_id
        return blob_id

    def _default_tags(
        self, traits: _Traits, k: int, count: int, manifest: bytes, created_ns: int
    ) -> tuple[str, ...]:
        last = count - 1
        moving: list[str] = []
        if k == last:
            moving.append("latest")
        if traits.stable and count >= 3 and k == last - 2:
            moving.append("stable")
        if not moving and k < last - 3 and manifest[40] < traits.untagged_per_256:
            return ()
        version = _version_tag(traits.tag_style, k, created_ns)
        tags = [version]
        if traits.variant:
            tags.append(f"{version}-{traits.variant}")
        return tuple(tags + moving)


# -- pure helpers ---------------------------------------------------------------------


def _split(total: int, weights: list[float], *, minimum: int) -> list[int]:
    """``total`` split proportionally to ``weights``, each part at least ``minimum``, exactly."""
    n = len(weights)
    rest = total - minimum * n
    if rest < 0:  # not enough for the minimum everywhere: ones first, zeros after
        return [1] * total + [0] * (n - total)
    weight_sum = sum(weights)
    quotas = [w / weight_sum * rest for w in weights]
    parts = [minimum + int(q) for q in quotas]
    short = total - sum(parts)
    by_fraction = sorted(range(n), key=lambda i: quotas[i] - int(quotas[i]), reverse=True)
    for i in by_fraction[:short]:
        parts[i] += 1
    return parts


def _app_path(rng: random.Random) -> str:
    service = rng.choice(catalog.SERVICES)
    if rng.random() < 0.3:
        service = f"{service}-{rng.choice(catalog.SUFFIXES)}"
    shape = rng.random()
    if shape < 0.25:
        return service
    team = rng.choice(catalog.TEAMS)
    if shape < 0.85:
        return f"{team}/{service}"
    return f"{rng.choice(catalog.ENVIRONMENTS)}/{team}/{service}"


def _created_ns(traits: _Traits, k: int, manifest: bytes) -> int:
    jitter = int(unit_float(manifest[32:39]) * (traits.step_ns // 2))
    ns = traits.start_ns + k * traits.step_ns + jitter
    precision = manifest[39] % 10
    if precision < 4:
        return ns  # nanoseconds
    if precision < 7:
        return ns - ns % 1_000  # microseconds
    if precision < 9:
        return ns - ns % 1_000_000  # milliseconds
    return ns - ns % 1_000_000_000  # whole seconds


def _version_tag(style: int, k: int, created_ns: int) -> str:
    """A tag injective in ``k``: versions never collide within a repository."""
    if style == 0:
        return f"{1 + k // 400}.{(k // 20) % 20}.{k % 20}"
    if style == 1:
        return f"v{1 + k // 400}.{(k // 20) % 20}.{k % 20}"
    if style == 2:
        return f"build-{k + 1}"
    day = time.strftime("%Y.%m.%d", time.gmtime(created_ns // 1_000_000_000))
    return f"{day}-{k + 1}"
