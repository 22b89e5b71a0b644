"""The dedup definitions as pure logic: the worked example of docs/STATS.md, JSON shapes, keys."""

from __future__ import annotations

from mirror.model import Blob, Image, Scope
from mirror.stats.cli import freshness_line, human_bytes
from mirror.stats.figures import DedupStats, Freshness, ImageUsage, LayerSavings, RelatedImage
from mirror.stats.queries import base_chain_keys, chain_part, chain_successor
from mirror.stats.reference import ReferenceIndex, chain_key, is_proper_prefix

MB = 1_000_000


def image(image_id: str, name: str, config: str, layers: list[tuple[str, int]]) -> Image:
    registry = name.split("/")[0]
    return Image(
        id=image_id,
        name=name,
        digest="sha256:" + image_id,
        compressed_size=sum(size for _, size in layers),
        config=Blob(f"{registry}-{config}", config, 1000),
        layers=tuple(Blob(f"{registry}-{d}", d, s) for d, s in layers),
        tags=(),
        created_at="",
    )


# docs/STATS.md, "A worked example"
DEBIAN = ("sha256:debian", 30 * MB)
PYTHON = ("sha256:python", 20 * MB)
APP1 = ("sha256:app1", 5 * MB)
APP2 = ("sha256:app2", 6 * MB)
BASE = image("crpbase", "reg1/python", "sha256:cfg-base", [DEBIAN, PYTHON])
WEB = image("crpweb", "reg1/web", "sha256:cfg-web", [DEBIAN, PYTHON, APP1])
API = image("crpapi", "reg2/api", "sha256:cfg-api", [DEBIAN, PYTHON, APP2])
EXAMPLE = ReferenceIndex.of([BASE, WEB, API], folder_of={"reg1": "fold", "reg2": "fold"})


def test_worked_example_whole_index() -> None:
    stats = EXAMPLE.stats(None)
    assert stats.logical_bytes == 3 * 1000 + 3 * 50 * MB + 11 * MB == 161_003_000
    assert stats.stored_bytes == 3 * 1000 + 50 * MB + 11 * MB == 61_003_000
    assert stats.saved_bytes == 100 * MB
    assert round(stats.dedup_ratio, 3) == 2.639
    assert (stats.images, stats.blobs, stats.reclaimable_blobs) == (3, 7, 0)


def test_worked_example_per_layer_saved_adds_up_to_the_total() -> None:
    layers = EXAMPLE.layers(10, 10)
    assert [(x.digest, x.ref_count, x.saved_bytes) for x in layers] == [
        ("sha256:debian", 3, 60 * MB),
        ("sha256:python", 3, 40 * MB),
    ]
    assert layers[0].repositories == ("reg1/python", "reg1/web", "reg2/api")
    assert sum(x.saved_bytes for x in layers) == EXAMPLE.stats(None).saved_bytes


def test_worked_example_usage_and_lineage() -> None:
    web = EXAMPLE.usage("crpweb", None, 10)
    assert web is not None
    assert (web.unique_bytes, web.shared_bytes) == (1000 + 5 * MB, 50 * MB)
    assert [b.id for b in web.base_images] == ["crpbase"] and web.derived_images == ()
    base = EXAMPLE.usage("crpbase", None, 10)
    assert base is not None and {d.id for d in base.derived_images} == {"crpweb", "crpapi"}
    # in its own repository nothing else shares the base's layers
    alone = EXAMPLE.usage("crpbase", Scope.parse("repository:reg1/python"), 10)
    assert alone is not None and (alone.unique_bytes, alone.shared_bytes) == (50 * MB + 1000, 0)


def test_reclaimable_is_what_a_scope_referenced_once_and_no_more() -> None:
    after = ReferenceIndex.of([BASE, API], history=[BASE, WEB, API], folder_of=EXAMPLE.folder_of)
    whole = after.stats(None)
    assert (whole.reclaimable_blobs, whole.reclaimable_bytes) == (2, 1000 + 5 * MB)
    # reg2 never held what web had
    assert after.stats(Scope.parse("registry:reg2")).reclaimable_blobs == 0
    assert [b.digest for b in after.reclaimable(10)] == ["sha256:app1", "sha256:cfg-web"]


def test_dedup_by_digest_not_blob_id() -> None:
    # the same digest has another blob id in each registry: still one stored blob
    assert WEB.layers[0].id != API.layers[0].id
    assert (
        EXAMPLE.stats(Scope.parse("folder:fold")).stored_bytes == EXAMPLE.stats(None).stored_bytes
    )


def test_stats_json_follows_upstream_conventions() -> None:
    stats = DedupStats(None, 3, 7, 161_003_000, 161_000_000, 61_003_000, 0, 0)
    assert stats.to_json() == {
        "scope": "all",
        "images": "3",
        "blobs": "7",
        "logicalBytes": "161003000",
        "compressedBytes": "161000000",
        "storedBytes": "61003000",
        "savedBytes": "100000000",
        "dedupRatio": 161_003_000 / 61_003_000,
        "reclaimableBlobs": "0",
        "reclaimableBytes": "0",
    }
    empty = DedupStats(Scope.parse("registry:r"), 0, 0, 0, 0, 0, 0, 0)
    assert empty.to_json()["dedupRatio"] == 1.0 and empty.to_json()["scope"] == "registry:r"


def test_layer_and_usage_json() -> None:
    layer = LayerSavings("sha256:x", 10, 3, 2, ("a/b", "a/c"))
    assert layer.to_json() == {
        "digest": "sha256:x",
        "size": "10",
        "refCount": "3",
        "repositoryCount": "2",
        "savedBytes": "20",
        "repositories": ["a/b", "a/c"],
    }
    usage = ImageUsage("crp1", None, 5, 7, (RelatedImage("crp0", "a/b", "sha256:d", 2),), ())
    assert usage.to_json() == {
        "imageId": "crp1",
        "scope": "all",
        "uniqueBytes": "5",
        "sharedBytes": "7",
        "baseImages": [{"id": "crp0", "name": "a/b", "digest": "sha256:d", "layerCount": "2"}],
    }


def test_chain_keys() -> None:
    chain = chain_key(WEB)
    assert len(chain) == 3 * 4 and chain.startswith(chain_key(BASE))
    assert base_chain_keys(chain, 3) == [b"", chain[:4], chain[:8]]
    assert base_chain_keys(b"", 0) == []
    # a truncated chain (over 256 layers): its whole key is a candidate too
    long_chain = chain_part("sha256:l") * 256
    assert base_chain_keys(long_chain, 300)[-1] == long_chain
    assert chain_successor(b"\x01\xff") == b"\x02"
    assert chain_successor(b"\xff\xff") is None
    assert chain_successor(b"") is None
    assert is_proper_prefix(("a",), ("a", "b")) and not is_proper_prefix(("a",), ("a",))
    assert is_proper_prefix((), ("a",)) and not is_proper_prefix((), ())


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 << 30) == "3.0 GiB"


def test_freshness_rides_along_but_is_not_a_figure() -> None:
    fresh = Freshness(
        event_id=9_007_199_254_740_993,
        time="2026-12-01T18:40:02Z",
        pending_changes=3,
        lag_seconds=1.23456,
    )
    figures = dict(
        images=1,
        blobs=1,
        logical_bytes=10,
        compressed_bytes=5,
        stored_bytes=10,
        reclaimable_blobs=0,
        reclaimable_bytes=0,
    )
    served = DedupStats(scope=None, freshness=fresh, **figures)
    # equal to the brute force, which knows nothing of folding
    assert served == DedupStats(scope=None, **figures)
    body = served.to_json()
    assert body["asOf"] == {"eventId": "9007199254740993", "time": "2026-12-01T18:40:02Z"}
    assert body["behind"] == {"changes": "3", "seconds": 1.235}
    assert "asOf" not in served.to_json(with_freshness=False)
    assert "asOf" not in DedupStats(scope=None, **figures).to_json()
    assert freshness_line(fresh) == (
        "Exact as of event 9007199254740993 (2026-12-01T18:40:02Z); 3 change(s) behind, the "
        "oldest 1.2s old (folded by a running `mirror ingest` or `mirror run`)."
    )
    settled = Freshness(event_id=7, time="t", pending_changes=0, lag_seconds=0.0)
    assert freshness_line(settled) == "Exact as of event 7 (t); nothing behind."
