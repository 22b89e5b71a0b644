"""The live registry: the generated model plus what happened since (pushes, tag moves, deletions).

State kept besides the immutable ``RegistryModel`` is proportional to the
changes, never to the registry: a set of deleted refs, pushed images, tag
overrides, a bounded change log and a few cached views.

Tests read the upstream's truth here, in-process: ``get(id)``,
``all_images(scope)``, ``ids(scope)``, ``count(scope)`` and ``changes_after(seq)``.
All methods must be called from the event loop's thread (``view`` runs the
one expensive step, sorting for an ``orderBy``, in a worker thread).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
import re
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mirror.errors import InvalidArgument, NotFound
from mirror.listing import Descending, NameFilter, SortField, SortKey, matches
from mirror.model import REPOSITORY_NAME_RE, Image, Scope, ScopeKind
from mirror.upstream.simulator.generator import IMAGE_ID_PREFIX, RegistryModel, RepoInfo
from mirror.upstream.simulator.images import SimImage
from mirror.upstream.simulator.views import ArraySeq, Key, KeyFn, RangeSeq, RefLog, View
from mirror.upstream.simulator.wire import id_from_bytes, rfc3339

TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # the OCI distribution spec's tag
CHANGE_LOG_LIMIT = 100_000
VIEW_CACHE_SIZE = 16
LOG_TRIM_AT = 10_000
JSON_CACHE_BYTES = 256 << 20  # default budget of the images' JSON cache (~180,000 images)
JSON_ENTRY_OVERHEAD = 120  # a cache entry's bytes besides the JSON: bytes header, key, slot


class ChangeType(StrEnum):
    PUSH = "push"
    RETAG = "retag"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Change:
    """One change to the upstream, in the order applied (``seq`` from 1)."""

    seq: int
    type: ChangeType
    image_id: str
    time_ns: int
    tags_added: tuple[str, ...] = ()
    tags_removed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": str(self.seq),
            "type": self.type.value,
            "imageId": self.image_id,
            "time": rfc3339(self.time_ns),
        }
        if self.tags_added:
            out["tagsAdded"] = list(self.tags_added)
        if self.tags_removed:
            out["tagsRemoved"] = list(self.tags_removed)
        return out


ViewKey = tuple[Scope, NameFilter | None, tuple[SortKey, ...]]


@dataclass(slots=True)
class Counters:
    """Changes applied since start (a tag moved off an image counts as a retag of it)."""

    pushed: int = 0
    retagged: int = 0
    deleted: int = 0


class SimulatedRegistry:
    """The upstream's images now. ``rng`` drives pushed ids and churn; ``clock`` gives ns."""

    def __init__(
        self,
        model: RegistryModel,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], int] = time.time_ns,
        json_cache_bytes: int = JSON_CACHE_BYTES,
    ) -> None:
        self.model = model
        self.rng = rng or random.Random(f"{model.seed}:live")
        self.clock = clock
        self.counters = Counters()
        self._deleted: set[int] = set()
        self._dead_static: list[int] = []  # sorted deleted generated refs
        self.dead_log = RefLog()  # what views replay to catch up (trimmed as they do)
        self.push_log = RefLog()
        self._dead_holds: list[int] = []  # dead_log positions sorted views being built still need
        self._pushed: dict[int, SimImage] = {}  # kept after deletion: cursors may still name them
        self._pushed_by_id: dict[str, int] = {}
        self._repo_pushed: dict[int, list[int]] = {}
        self._registry_pushed: dict[int, list[int]] = {}
        self._next_version: dict[int, int] = {}
        self._extra_repos: list[RepoInfo] = []
        self._extra_repo_index: dict[str, int] = {}
        self._tags: dict[int, tuple[str, ...]] = {}  # tags changed since generation/push
        self._tag_index: dict[int, dict[str, int]] = {}  # repo -> tag -> ref, built on first change
        self._changes: deque[Change] = deque(maxlen=CHANGE_LOG_LIMIT)
        self._seq = 0
        self._views: OrderedDict[ViewKey, View] = OrderedDict()
        self._building: dict[ViewKey, asyncio.Future[View]] = {}
        self._json: dict[int, bytes] = {}  # ref -> its JSON now (see ``json_bytes``)
        self._json_used = 0  # bytes the cache takes, entries' overhead included
        self._json_budget = json_cache_bytes

    # -- reading -------------------------------------------------------------------

    def get(self, image_id: str) -> Image | None:
        """The live image with this id, as the domain type."""
        record = self.lookup(image_id)
        return record.to_image() if record else None

    def lookup(self, image_id: str) -> SimImage | None:
        """The live image with this id, as the simulator holds it."""
        ref = self.ref_of(image_id)
        if ref is None or ref in self._deleted:
            return None
        return self.record(ref)

    def ref_of(self, image_id: str) -> int | None:
        """The ref an id names, live or deleted."""
        ref = self.model.ref_of_id(image_id)
        return ref if ref is not None else self._pushed_by_id.get(image_id)

    def is_live(self, ref: int) -> bool:
        return ref not in self._deleted

    def record(self, ref: int) -> SimImage:
        """Image ``ref`` with its current tags (deleted or not)."""
        base = self.model.image(ref) if ref < self.model.images else self._pushed[ref]
        tags = self._tags.get(ref)
        return base if tags is None else base._replace(tags=tags)

    def json_bytes(self, ref: int) -> bytes:
        """Image ``ref`` with its current tags as the upstream's JSON, UTF-8 (the List fast path).

        Served from a bounded cache when it can be: an image's JSON changes only when its
        tags do (``_set_tags`` drops the entry), so a cached entry is never stale.
        """
        data = self._json.get(ref)
        if data is None:
            if ref < self.model.images:
                data = self.model.image_json(ref, self._tags.get(ref)).encode()
            else:
                data = self.record(ref).json_text().encode()
            self._json_used += len(data) + JSON_ENTRY_OVERHEAD
            while self._json_used > self._json_budget and self._json:
                # the newest entry goes: on walks larger than the cache, the first
                # images walked stay cached (an LRU would keep none of them)
                self._json_used -= len(self._json.popitem()[1]) + JSON_ENTRY_OVERHEAD
            if self._json_used <= self._json_budget:
                self._json[ref] = data
            else:
                self._json_used -= len(data) + JSON_ENTRY_OVERHEAD
        return data

    def json_text(self, ref: int) -> str:
        """``json_bytes`` as text."""
        return self.json_bytes(ref).decode()

    def all_images(self, scope: Scope | None = None) -> Iterator[Image]:
        """Every live image (of ``scope``), in id order."""
        for ref in self.refs(scope):
            yield self.record(ref).to_image()

    def ids(self, scope: Scope | None = None) -> Iterator[str]:
        """Ids of every live image (of ``scope``), ascending."""
        for ref in self.refs(scope):
            yield self.image_id(ref)

    def count(self, scope: Scope | None = None) -> int:
        if scope is None:
            return self.model.images + len(self._pushed) - len(self._deleted)
        return len(self.default_view(scope))

    def refs(self, scope: Scope | None = None) -> Iterator[int]:
        """Live refs (of ``scope``) in id order."""
        if scope is not None:
            yield from self.default_view(scope).iter_all()
            return
        folders = [
            self.default_view(Scope(ScopeKind.FOLDER, fid)).iter_all()
            for fid in self.model.folder_ids
        ]
        yield from heapq.merge(*folders, key=self.image_id)

    def image_id(self, ref: int) -> str:
        return self.model.image_id(ref) if ref < self.model.images else self._pushed[ref].id

    def repository(self, name: str) -> RepoInfo | None:
        index = self.model.repo_index(name)
        if index is not None:
            return self.model.repo(index)
        extra = self._extra_repo_index.get(name)
        return self._extra_repos[extra] if extra is not None else None

    def repo_info(self, index: int) -> RepoInfo:
        if index < self.model.repository_count:
            return self.model.repo(index)
        return self._extra_repos[index - self.model.repository_count]

    def repositories(self, registry_id: str) -> Iterator[RepoInfo]:
        """Repositories of a registry: generated ones, then those created by pushes."""
        registry = self.model.registry_index(registry_id)
        if registry is None:
            return
        for index in self.model.registry_repos(registry):
            yield self.model.repo(index)
        for repo in self._extra_repos:
            if repo.registry == registry:
                yield repo

    def repo_image_count(self, index: int) -> int:
        """Live images of a repository."""
        info = self.repo_info(index)
        dead = 0
        if info.count:
            lo = bisect.bisect_left(self._dead_static, info.first)
            dead = bisect.bisect_left(self._dead_static, info.first + info.count) - lo
        pushed = sum(1 for ref in self._repo_pushed.get(index, ()) if ref not in self._deleted)
        return info.count - dead + pushed

    def changes_after(self, seq: int, limit: int = 1000) -> list[Change]:
        """Changes with ``seq`` greater than the given one, oldest first (the log keeps the last 100,000)."""
        out = []
        for change in self._changes:
            if change.seq > seq:
                out.append(change)
                if len(out) >= limit:
                    break
        return out

    @property
    def last_seq(self) -> int:
        return self._seq

    # -- changing ----------------------------------------------------------------------

    def push(self, repository_name: str, tags: Iterable[str] | None = None) -> SimImage:
        """A new image in a repository (created if new, in an existing registry).

        Without ``tags`` it gets the repository's next version tag and ``latest``;
        tags it takes are moved off the images that had them.
        """
        if not REPOSITORY_NAME_RE.fullmatch(repository_name) or "/" not in repository_name:
            raise InvalidArgument(
                f"invalid repositoryName: {repository_name!r} is not <registryId>/<path>"
            )
        wanted = None if tags is None else _valid_tags(tags)
        repo = self.repository(repository_name)
        if repo is None:
            registry_id = repository_name.split("/", 1)[0]
            registry = self.model.registry_index(registry_id)
            if registry is None:
                raise NotFound(f"Registry {registry_id} not found")
            repo = RepoInfo(
                self.model.repository_count + len(self._extra_repos),
                registry,
                repository_name,
                -1,
                0,
            )
            self._extra_repo_index[repository_name] = len(self._extra_repos)
            self._extra_repos.append(repo)
        version = self._next_version.get(repo.index, repo.count)
        self._next_version[repo.index] = version + 1
        if wanted is None:
            wanted = list(self.model.default_tags(repo, version, version + 1))
        ref = self.model.images + len(self._pushed)
        image_id = self._new_image_id()
        self._pushed[ref] = self.model.build(
            repo,
            version,
            ref=ref,
            image_id=image_id,
            created_ns=_with_random_precision(self.clock(), self.rng),
            tags=(),
        )
        self._pushed_by_id[image_id] = ref
        self._repo_pushed.setdefault(repo.index, []).append(ref)
        self._registry_pushed.setdefault(repo.registry, []).append(ref)
        given = self._give_tags(self._repo_tags(repo.index), ref, wanted)
        self.counters.pushed += 1
        self._record(ChangeType.PUSH, image_id, tuple(given))
        self.push_log.append(ref)
        return self.record(ref)

    def retag(self, image_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> SimImage:
        """Add tags (moving them off their holders in the repository) and remove tags."""
        add_tags, remove_tags = _valid_tags(add), _valid_tags(remove)
        record = self.lookup(image_id)
        if record is None:
            raise NotFound(f"Image {image_id} not found")
        index = self._repo_tags(record.repo)
        current = list(record.tags)
        removed = [tag for tag in remove_tags if tag in current and tag not in add_tags]
        for tag in removed:
            current.remove(tag)
            index.pop(tag, None)
        if removed:
            self._set_tags(record.ref, current)
        added = self._give_tags(index, record.ref, [t for t in add_tags if t not in current])
        if added or removed:
            self.counters.retagged += 1
            self._record(ChangeType.RETAG, image_id, tuple(added), tuple(removed))
        return self.record(record.ref)

    def delete(self, image_id: str) -> SimImage:
        """Delete an image at once; returns it as it was."""
        record = self.lookup(image_id)
        if record is None:
            raise NotFound(f"Image {image_id} not found")
        ref = record.ref
        self._deleted.add(ref)
        if ref < self.model.images:
            bisect.insort(self._dead_static, ref)
        self.dead_log.append(ref)
        index = self._tag_index.get(record.repo)
        if index is not None:
            for tag in record.tags:
                if index.get(tag) == ref:
                    del index[tag]
        self.counters.deleted += 1
        self._record(ChangeType.DELETE, image_id)
        return record

    def random_live_ref(self, rng: random.Random, attempts: int = 64) -> int | None:
        """A live image picked at random (None if none found in a few tries)."""
        total = self.model.images + len(self._pushed)
        for _ in range(attempts):
            ref = rng.randrange(total)
            if ref not in self._deleted:
                return ref
        return None

    def _give_tags(self, index: dict[str, int], ref: int, tags: Iterable[str]) -> list[str]:
        """Give ``tags`` to ``ref``, taking each from its current holder (tags are unique in a repo)."""
        given = []
        for tag in tags:
            holder = index.get(tag)
            if holder == ref:
                continue
            if holder is not None:
                held = [t for t in self.record(holder).tags if t != tag]
                self._set_tags(holder, held)
                self.counters.retagged += 1
                self._record(ChangeType.RETAG, self.image_id(holder), (), (tag,))
            index[tag] = ref
            given.append(tag)
        if given:
            self._set_tags(ref, [*self.record(ref).tags, *given])
        return given

    def _set_tags(self, ref: int, tags: Iterable[str]) -> None:
        self._tags[ref] = tuple(tags)
        cached = self._json.pop(ref, None)
        if cached is not None:
            self._json_used -= len(cached) + JSON_ENTRY_OVERHEAD

    def _repo_tags(self, repo: int) -> dict[str, int]:
        """tag -> ref for the live images of a repository (built on first need, then kept)."""
        index = self._tag_index.get(repo)
        if index is None:
            index = {}
            info = self.repo_info(repo)
            refs: Iterable[int] = range(info.first, info.first + info.count) if info.count else ()
            for ref in [*refs, *self._repo_pushed.get(repo, ())]:
                if ref in self._deleted:
                    continue
                if ref in self._tags:
                    tags = self._tags[ref]
                elif ref < self.model.images:
                    tags = self.model.default_tags(info, ref - info.first, info.count)
                else:
                    tags = self._pushed[ref].tags
                for tag in tags:
                    index[tag] = ref
            self._tag_index[repo] = index
        return index

    def _record(
        self,
        change: ChangeType,
        image_id: str,
        added: tuple[str, ...] = (),
        removed: tuple[str, ...] = (),
    ) -> None:
        self._seq += 1
        self._changes.append(Change(self._seq, change, image_id, self.clock(), added, removed))
        if len(self.dead_log) + len(self.push_log) > LOG_TRIM_AT:
            self._trim_logs()

    def _trim_logs(self) -> None:
        """Drop the log entries every cached view (and every view being built) has applied."""
        views = self._views.values()
        self.dead_log.drop_before(
            min([view.dead_seen for view in views] + self._dead_holds, default=self.dead_log.end)
        )
        self.push_log.drop_before(
            min([view.push_seen for view in views], default=self.push_log.end)
        )

    def _new_image_id(self) -> str:
        while True:
            image_id = id_from_bytes(IMAGE_ID_PREFIX, self.rng.randbytes(17))
            if not self.model.is_generated_id(image_id) and image_id not in self._pushed_by_id:
                return image_id

    # -- views -------------------------------------------------------------------------

    def default_view(self, scope: Scope) -> View:
        """The scope's images in id order (built synchronously: it stores nothing per image)."""
        return self.cached_view(scope, None, ()) or self._new_range_view(scope, None)

    def cached_view(
        self, scope: Scope, name_filter: NameFilter | None, order: tuple[SortKey, ...]
    ) -> View | None:
        key = (scope, name_filter, order)
        view = self._views.get(key)
        if view is None:
            if not order:
                view = self._new_range_view(scope, name_filter)
                self._remember(key, view)
            return view
        self._views.move_to_end(key)
        view.sync(self.dead_log, self.push_log, self.model.images)
        return view

    async def view(
        self, scope: Scope, name_filter: NameFilter | None, order: tuple[SortKey, ...]
    ) -> View:
        """The live view for a listing; an ``orderBy`` view is sorted once, in a worker thread."""
        view = self.cached_view(scope, name_filter, order)
        if view is not None:
            return view
        key = (scope, name_filter, order)
        pending = self._building.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._build_sorted_view(key))
            self._building[key] = pending
            pending.add_done_callback(lambda _: self._building.pop(key, None))
        view = await asyncio.shield(pending)
        view.sync(self.dead_log, self.push_log, self.model.images)
        return view

    def _remember(self, key: ViewKey, view: View) -> None:
        self._views[key] = view
        while len(self._views) > VIEW_CACHE_SIZE:
            self._views.popitem(last=False)

    def _new_range_view(self, scope: Scope, name_filter: NameFilter | None) -> View:
        static = RangeSeq(self._static_runs(scope, name_filter))
        belongs = self._belongs(scope, name_filter)
        return View(
            static,
            self.key_function(()),
            belongs,
            dead=static.positions_of_sorted(self._dead_static),
            extra=[
                ref for ref in self._pushed_in(scope) if ref not in self._deleted and belongs(ref)
            ],
            dead_seen=self.dead_log.end,
            push_seen=self.push_log.end,
        )

    async def _build_sorted_view(self, key: ViewKey) -> View:
        scope, name_filter, order = key
        runs = self._static_runs(scope, name_filter)
        dead = frozenset(self._deleted)
        dead_seen = self.dead_log.end
        self._dead_holds.append(dead_seen)
        try:
            refs = await asyncio.to_thread(_sorted_refs, self.model, runs, order, dead)
        finally:
            self._dead_holds.remove(dead_seen)
        belongs = self._belongs(scope, name_filter)
        view = View(
            ArraySeq(refs),
            self.key_function(order),
            belongs,
            dead=[],
            extra=[
                ref for ref in self._pushed_in(scope) if ref not in self._deleted and belongs(ref)
            ],
            dead_seen=dead_seen,
            push_seen=self.push_log.end,
        )
        self._remember(key, view)
        return view

    def _pushed_in(self, scope: Scope) -> list[int]:
        """Pushed refs (live or not) that may belong to ``scope``: a superset, cheaply."""
        if scope.kind is ScopeKind.REPOSITORY:
            repo = self.repository(scope.id)
            return self._repo_pushed.get(repo.index, []) if repo is not None else []
        if scope.kind is ScopeKind.REGISTRY:
            registry = self.model.registry_index(scope.id)
            return self._registry_pushed.get(registry, []) if registry is not None else []
        folder = self.model.folder_index(scope.id)
        if folder is None:
            return []
        return [
            ref
            for registry in self.model.folder_registries(folder)
            for ref in self._registry_pushed.get(registry, [])
        ]

    def _static_runs(self, scope: Scope, name_filter: NameFilter | None) -> list[range]:
        """Generated refs of a scope that pass the filter, as ascending ranges."""
        model = self.model
        if scope.kind is ScopeKind.REPOSITORY:
            index = model.repo_index(scope.id)
            repos = range(index, index + 1) if index is not None else range(0)
        elif scope.kind is ScopeKind.REGISTRY:
            registry = model.registry_index(scope.id)
            repos = model.registry_repos(registry) if registry is not None else range(0)
        else:
            folder = model.folder_index(scope.id)
            if folder is None:
                repos = range(0)
            else:
                registries = model.folder_registries(folder)
                repos = range(
                    model.registry_repo_start[registries.start],
                    model.registry_repo_start[registries.stop],
                )
        if not len(repos):
            return []
        if name_filter is None:
            return [range(model.repo_start[repos.start], model.repo_start[repos.stop])]
        if name_filter.selects:
            chosen = sorted(
                {
                    i
                    for i in map(model.repo_index, name_filter.values)
                    if i is not None and i in repos
                }
            )
        else:
            chosen = [i for i in repos if name_filter.matches(model.repo_names[i])]
        runs: list[range] = []
        for i in chosen:
            start, stop = model.repo_start[i], model.repo_start[i + 1]
            if runs and runs[-1].stop == start:
                runs[-1] = range(runs[-1].start, stop)
            else:
                runs.append(range(start, stop))
        return runs

    def _belongs(self, scope: Scope, name_filter: NameFilter | None) -> Callable[[int], bool]:
        """Does pushed image ``ref`` belong to the listing of ``scope`` and ``name_filter``?"""
        model = self.model

        def belongs(ref: int) -> bool:
            record = self._pushed[ref]
            if not matches(name_filter, record.name):
                return False
            if scope.kind is ScopeKind.REPOSITORY:
                return record.name == scope.id
            registry = self.repo_info(record.repo).registry
            if scope.kind is ScopeKind.REGISTRY:
                return model.registry_ids[registry] == scope.id
            return model.folder_ids[model.folder_of_registry(registry)] == scope.id

        return belongs

    def key_function(self, order: tuple[SortKey, ...]) -> KeyFn:
        """The sort key of any ref for ``order``: the fields, then the id (see mirror.listing)."""
        model = self.model
        n_static = model.images

        if not order:

            def id_key(ref: int) -> Key:
                return (model.image_id(ref) if ref < n_static else self._pushed[ref].id,)

            return id_key

        def key(ref: int) -> Key:
            if ref < n_static:
                name, digest, created = model.sort_fields_of(ref)
                image_id = model.image_id(ref)
            else:
                record = self._pushed[ref]
                name, digest, created, image_id = (
                    record.name,
                    record.digest,
                    record.created_ns,
                    record.id,
                )
            parts: list[Any] = []
            for sort_key in order:
                if sort_key.field is SortField.CREATED_AT:
                    parts.append(-created if sort_key.descending else created)
                    continue
                value = name if sort_key.field is SortField.NAME else digest
                parts.append(Descending(value) if sort_key.descending else value)
            parts.append(image_id)
            return tuple(parts)

        return key


def _sorted_refs(
    model: RegistryModel,
    runs: list[range],
    order: tuple[SortKey, ...],
    dead: frozenset[int],
) -> array[int]:
    """Generated refs of ``runs`` (minus ``dead``) sorted by ``order`` then id.

    Runs in a worker thread. Refs start in id order; one stable sort per key, last
    key first, gives the full order (``reverse=True`` keeps the sort stable).
    """
    refs: list[int] = []
    values: dict[SortField, list[int]] = {key.field: [] for key in order}
    name_rank = model.repo_name_ranks() if SortField.NAME in values else None
    hashed = SortField.DIGEST in values or SortField.CREATED_AT in values
    for run in runs:
        for ref, (repo, digest, created) in zip(
            run, model.sort_values(run.start, run.stop, hashed=hashed), strict=True
        ):
            if ref in dead:
                continue
            refs.append(ref)
            for sort_field, column in values.items():
                if sort_field is SortField.NAME:
                    assert name_rank is not None
                    column.append(name_rank[repo])
                elif sort_field is SortField.DIGEST:
                    column.append(digest)
                else:
                    column.append(created)
    permutation = list(range(len(refs)))
    for sort_key in reversed(order):
        permutation.sort(key=values[sort_key.field].__getitem__, reverse=sort_key.descending)
    return array("q", (refs[i] for i in permutation))


def _valid_tags(tags: Iterable[str]) -> list[str]:
    out = []
    for tag in tags:
        if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
            raise InvalidArgument(f"invalid tag: {tag!r} is not a valid image tag")
        if tag not in out:
            out.append(tag)
    return out


def _with_random_precision(ns: int, rng: random.Random) -> int:
    """A wall-clock time cut to ns, us, ms or s, as real pushes show all four."""
    unit = rng.choice((1, 1, 1_000, 1_000_000, 1_000_000_000))
    return ns - ns % unit
