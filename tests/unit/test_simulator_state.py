"""The simulator's live registry: changes, tag uniqueness, and listings checked against brute force."""

from __future__ import annotations

import itertools
import random

import orjson
import pytest

from mirror.errors import InvalidArgument, NotFound
from mirror.listing import image_sort_key, parse_list_request
from mirror.model import Scope, ScopeKind
from mirror.upstream.simulator import state
from mirror.upstream.simulator.generator import RegistryModel
from mirror.upstream.simulator.state import ChangeType, SimulatedRegistry


@pytest.fixture
def registry() -> SimulatedRegistry:
    return SimulatedRegistry(
        RegistryModel(images=3_000, seed=7, folders=2, registries_per_folder=2)
    )


def _repo_with(registry: SimulatedRegistry, at_least: int) -> str:
    model = registry.model
    return next(
        model.repo_names[r]
        for r in range(model.repository_count)
        if model.repo_start[r + 1] - model.repo_start[r] >= at_least
    )


def _tags_of_repo(registry: SimulatedRegistry, name: str) -> list[str]:
    scope = Scope(ScopeKind.REPOSITORY, name)
    return [tag for image in registry.all_images(scope) for tag in image.tags]


def test_push_takes_latest_and_a_new_version(registry: SimulatedRegistry) -> None:
    name = _repo_with(registry, 3)
    scope = Scope(ScopeKind.REPOSITORY, name)
    before = registry.count(scope)
    previous_latest = next(i for i in registry.all_images(scope) if "latest" in i.tags)
    pushed = registry.push(name)
    assert pushed.name == name and "latest" in pushed.tags
    assert registry.count(scope) == before + 1
    assert "latest" not in registry.get(previous_latest.id).tags  # type: ignore[union-attr]
    tags = _tags_of_repo(registry, name)
    assert len(tags) == len(set(tags))
    kinds = [c.type for c in registry.changes_after(0)]
    assert kinds == [ChangeType.RETAG, ChangeType.PUSH]
    assert registry.get(pushed.id) == pushed.to_image()


def test_push_to_a_new_repository_of_a_known_registry(registry: SimulatedRegistry) -> None:
    name = registry.model.registry_ids[1] + "/brand/new"
    image = registry.push(name, tags=["v1", "v1"])
    assert image.tags == ("v1",)
    assert [i.id for i in registry.all_images(Scope(ScopeKind.REPOSITORY, name))] == [image.id]
    assert image.id in set(registry.ids(Scope(ScopeKind.REGISTRY, registry.model.registry_ids[1])))
    assert not registry.model.is_generated_id(image.id)


@pytest.mark.parametrize(
    ("name", "tags", "error"),
    [
        ("crp00000000000000000/x", None, NotFound),
        ("no-registry-part", None, InvalidArgument),
        ("Bad/Name", None, InvalidArgument),
    ],
)
def test_push_refuses(
    registry: SimulatedRegistry, name: str, tags: list[str] | None, error: type
) -> None:
    with pytest.raises(error):
        registry.push(name, tags)


def test_push_refuses_bad_tags_without_changing_anything(registry: SimulatedRegistry) -> None:
    name = _repo_with(registry, 1)
    with pytest.raises(InvalidArgument):
        registry.push(name, tags=["ok", "-bad"])
    assert registry.last_seq == 0 and registry.count() == registry.model.images


def test_retag_moves_a_tag_within_the_repository(registry: SimulatedRegistry) -> None:
    name = _repo_with(registry, 3)
    first, second = list(registry.all_images(Scope(ScopeKind.REPOSITORY, name)))[:2]
    registry.retag(first.id, add=["release"])
    registry.retag(second.id, add=["release"], remove=[])
    assert "release" not in registry.get(first.id).tags  # type: ignore[union-attr]
    assert "release" in registry.get(second.id).tags  # type: ignore[union-attr]
    registry.retag(second.id, remove=["release"])
    assert "release" not in _tags_of_repo(registry, name)
    changes = registry.changes_after(0)
    assert [(c.type, c.tags_added, c.tags_removed) for c in changes] == [
        (ChangeType.RETAG, ("release",), ()),
        (ChangeType.RETAG, (), ("release",)),
        (ChangeType.RETAG, ("release",), ()),
        (ChangeType.RETAG, (), ("release",)),
    ]


def test_delete_frees_tags_and_hides_the_image(registry: SimulatedRegistry) -> None:
    name = _repo_with(registry, 2)
    newest = list(registry.all_images(Scope(ScopeKind.REPOSITORY, name)))[-1]
    registry.delete(newest.id)
    assert registry.get(newest.id) is None
    assert newest.id not in set(registry.ids())
    with pytest.raises(NotFound):
        registry.delete(newest.id)
    other = next(iter(registry.all_images(Scope(ScopeKind.REPOSITORY, name))))
    registry.retag(other.id, add=["latest"])  # free again: no holder loses it
    assert registry.changes_after(1)[0].tags_removed == ()


def test_counts_follow_changes(registry: SimulatedRegistry) -> None:
    rng = random.Random(5)
    for _ in range(50):
        ref = registry.random_live_ref(rng)
        assert ref is not None
        registry.delete(registry.image_id(ref))
    for _ in range(20):
        registry.push(_repo_with(registry, 1))
    assert registry.count() == registry.model.images - 50 + 20
    assert sum(1 for _ in registry.ids()) == registry.count()
    folders = [Scope(ScopeKind.FOLDER, f) for f in registry.model.folder_ids]
    assert sum(registry.count(s) for s in folders) == registry.count()
    ids = list(registry.ids())
    assert ids == sorted(ids)


@pytest.mark.parametrize("cached_views", [state.VIEW_CACHE_SIZE, 100])
async def test_listings_match_brute_force_while_the_registry_changes(
    registry: SimulatedRegistry, monkeypatch: pytest.MonkeyPatch, cached_views: int
) -> None:
    """Every view (scope x filter x order) equals sorting the truth, page by page, both token styles.

    The change logs views replay are trimmed often here, as a long churn would. With
    the default cache most views are rebuilt each round; with room for all 63 every
    view catches up by replaying the logs.
    """
    monkeypatch.setattr(state, "LOG_TRIM_AT", 30)
    monkeypatch.setattr(state, "VIEW_CACHE_SIZE", cached_views)
    model = registry.model
    rng = random.Random(1)
    orders = [
        "",
        "name",
        "name desc",
        "created_at desc",
        "digest",
        "name desc, created_at",
        "created_at, digest desc",
    ]
    filters = [
        "",
        f'name!="{model.repo_names[3]}"',
        f'name IN ("{model.repo_names[1]}","{model.repo_names[2]}")',
    ]
    scopes = [
        ("folderId", model.folder_ids[0]),
        ("registryId", model.registry_ids[0]),
        ("repositoryName", model.repo_names[1]),
    ]
    for _ in range(3):
        for _ in range(40):
            draw = rng.random()
            if draw < 0.4:
                target = (
                    rng.choice(model.repo_names)
                    if rng.random() < 0.9
                    else model.registry_ids[0] + "/new/repo"
                )
                pushed = registry.push(target)
                if rng.random() < 0.25:  # gone before any view catches up with its push
                    registry.delete(pushed.id)
            elif draw < 0.7:
                registry.delete(registry.image_id(registry.random_live_ref(rng)))  # type: ignore[arg-type]
            else:
                ref = registry.random_live_ref(rng)
                registry.retag(registry.image_id(ref), add=[f"x{rng.randrange(5)}"])  # type: ignore[arg-type]
        every_ref = range(model.images + registry.counters.pushed)  # not from a view
        truth = [registry.record(ref).to_json() for ref in every_ref if registry.is_live(ref)]
        for order_by in orders:
            ordered = sorted(
                truth,
                key=image_sort_key(
                    parse_list_request({"folderId": "f", "orderBy": order_by}).order
                ),
            )
            for (param, scope_id), text in itertools.product(scopes, filters):
                request = parse_list_request({param: scope_id, "orderBy": order_by, "filter": text})
                expected = [
                    image["id"]
                    for image in ordered
                    if _in_scope(registry, request.scope, image["name"])
                    and (request.filter is None or request.filter.matches(image["name"]))
                ]
                view = await registry.view(request.scope, request.filter, request.order)
                assert len(view) == len(expected)
                assert [registry.image_id(r) for r in view.iter_all()] == expected
                for size in (7, 100):
                    assert _walk_offsets(registry, view, size) == expected
                    assert _walk_cursors(registry, view, size) == expected
    assert registry.dead_log.end + registry.push_log.end > 80
    assert len(registry.dead_log) + len(registry.push_log) < 60, "applied log entries are dropped"


@pytest.mark.parametrize("order_by", ["", "name"])
async def test_an_image_pushed_and_deleted_between_listings_is_not_listed(
    registry: SimulatedRegistry, order_by: str
) -> None:
    """A view catching up with a push and the deletion of that same image lists neither."""
    repo = _repo_with(registry, 2)
    request = parse_list_request({"repositoryName": repo, "orderBy": order_by})
    before = await registry.view(request.scope, request.filter, request.order)
    listed = [registry.image_id(ref) for ref in before.iter_all()]
    pushed = registry.push(repo)
    registry.delete(pushed.id)
    view = await registry.view(request.scope, request.filter, request.order)
    assert [registry.image_id(ref) for ref in view.iter_all()] == listed
    assert len(view) == len(listed)
    assert registry.get(pushed.id) is None


def _in_scope(registry: SimulatedRegistry, scope: Scope, name: str) -> bool:
    model = registry.model
    if scope.kind is ScopeKind.REPOSITORY:
        return name == scope.id
    registry_id = name.split("/", 1)[0]
    if scope.kind is ScopeKind.REGISTRY:
        return registry_id == scope.id
    index = model.registry_index(registry_id)
    return index is not None and model.folder_ids[model.folder_of_registry(index)] == scope.id


def _walk_offsets(registry: SimulatedRegistry, view, size: int) -> list[str]:  # type: ignore[no-untyped-def]
    ids: list[str] = []
    while True:
        page = view.page_at(len(ids), size)
        ids += [registry.image_id(r) for r in page]
        if len(page) < size:
            return ids


def _walk_cursors(registry: SimulatedRegistry, view, size: int) -> list[str]:  # type: ignore[no-untyped-def]
    ids: list[str] = []
    page = view.page_at(0, size)
    while True:
        ids += [registry.image_id(r) for r in page]
        if len(page) < size:
            return ids
        page = view.page_after(view.key(page[-1]), size)


@pytest.mark.parametrize("budget", [0, 20_000, state.JSON_CACHE_BYTES])
def test_cached_json_follows_tag_changes_within_its_budget(budget: int) -> None:
    """What List serves is the image's JSON now, cached or not, however small the cache."""
    registry = SimulatedRegistry(
        RegistryModel(images=500, seed=3, folders=1, registries_per_folder=2),
        json_cache_bytes=budget,
    )
    rng = random.Random(11)

    def check_all() -> None:
        for ref in range(registry.model.images + len(registry._pushed)):
            expected = orjson.dumps(registry.record(ref).to_json())
            assert registry.json_bytes(ref) == expected
        assert registry._json_used == sum(
            len(data) + state.JSON_ENTRY_OVERHEAD for data in registry._json.values()
        )
        assert registry._json_used <= budget

    check_all()
    for i in range(60):
        ref = registry.random_live_ref(rng)
        assert ref is not None
        image_id = registry.image_id(ref)
        if i % 3 == 0:
            registry.retag(image_id, add=[f"t{i}", "latest"], remove=["stable"])
        elif i % 3 == 1:
            registry.push(registry.record(ref).name)
        else:
            registry.delete(image_id)
        check_all()
