"""Domain types: plain, frozen, no I/O.

The JSON shape is the upstream's (camelCase, int64 as strings, empty fields
omitted); ``to_json`` / ``from_json`` are the only places that know it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mirror.errors import ConfigError

# The cloud's patterns and limits (../shared/seeds).
REPOSITORY_NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(/([a-z0-9]+(?:[._-][a-z0-9]+)*))*")
ID_MAX_LEN = 50
IMAGE_ID_LEN = 20
IMAGE_ID_PREFIX = "crp"


# Blob digests as the index stores them (sql/090_blob_arrays.sql): "sha256:" and
# 64 lower-case hex digits as their 32 bytes; any other text as its UTF-8 bytes
# padded with NUL to at least 33 bytes (lossless, and never 32 bytes long).
SHA256_PREFIX = "sha256:"
SHA256_KEY_BYTES = 32
_OTHER_KEY_MIN = SHA256_KEY_BYTES + 1


def digest_key(digest: str) -> bytes:
    """The stored key of a digest, a blob's or an image's (the SQL ``mirror_digest_key``)."""
    if len(digest) == 71 and digest.startswith(SHA256_PREFIX):
        hexdigits = digest[7:]
        try:
            key = bytes.fromhex(hexdigits)
        except ValueError:
            key = b""
        if len(key) == SHA256_KEY_BYTES and key.hex() == hexdigits:
            return key
    raw = digest.encode()
    return raw + b"\0" * max(0, _OTHER_KEY_MIN - len(raw))


# An image's JSON is stored as a template (sql/104_images_doc_template.sql): each
# "sha256:" digest whose 64 hex digits the row's columns also hold (the image's own,
# the blob keys) and each of three JSON fragments that every blob repeats stands as
# "%N$s" for the N-th of ``doc_template_values``; every other "%" is doubled.
# PostgreSQL's ``format(template, VARIADIC values)`` (``image_doc``) gives the JSON
# back byte for byte. Of the simulator's ~1,360 bytes an image, the digests are ~630
# and the fragments ~250. Replacing undoes exactly: the hex values are replaced where
# they stand in the doc, before anything else, and a fragment neither contains "%"
# nor starts or ends with a character a placeholder holds, so it is never found
# across one.
#
# A template of the second kind (sql/111_images_blob_objects.sql; the row's
# ``blob_ids`` not NULL) holds each blob's whole object, ``{"id":…,"digest":…,
# "size":…}`` as the ingest writes it (``blob_object``), as one placeholder: value
# 6 + n is the n-th blob's object, made again from its id (``blob_ids``, the ids
# joined by spaces), key and size (``blob_sizes``); value 5 is the image's id (where
# the doc starts with it) and 6 its name (its ``"name"`` member), from their columns.
# The image's own digest and the fragments are then replaced as above. An image gets
# it when every blob's object is found in its doc, one after the other (all of the
# simulator's, and the cloud's blobs of id, digest and size); any other keeps the first
# kind. Each object found is one placeholder, a blob listed twice two.
#
# The fragments are part of every stored template: never change them (sql/104 spells
# them too; tests/unit/test_doc_template.py pins them).
DOC_TEMPLATE_FRAGMENTS = ('","digest":"sha256:', '"},{"id":"', '","size":"')
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PLACEHOLDER = re.compile(r"%(?:%|([1-9][0-9]*)\$s)")
_FIRST_HEX = len(DOC_TEMPLATE_FRAGMENTS) + 1  # the placeholder number of the image digest
_HEX_DIGITS = 2 * SHA256_KEY_BYTES
BLOB_IDS_SEPARATOR = " "


def blob_object(blob_id: str, key: bytes, size: int) -> str:
    """A blob's JSON object as a template of the second kind stands for it (sql/111)."""
    return f'{{"id":"{blob_id}","digest":"sha256:{key.hex()}","size":"{size}"}}'


def doc_template_values(
    digest: str,
    keys: Iterable[bytes],
    sizes: Iterable[int] = (),
    blob_ids: str | None = None,
    image_id: str = "",
    name: str = "",
) -> list[str]:
    """What a template's placeholders stand for: the SQL ``image_doc``'s argument list.

    ``blob_ids`` (the row's column) says the template is of the second kind."""
    head = [*DOC_TEMPLATE_FRAGMENTS, digest[len(SHA256_PREFIX) :]]
    if blob_ids is None:
        return [*head, *(bytes(k).hex() for k in keys)]
    ids = blob_ids.split(BLOB_IDS_SEPARATOR) if blob_ids else []
    objects = (blob_object(i, k, s) for i, k, s in zip(ids, keys, sizes, strict=False))
    return [*head, image_id, name, *objects]


def image_template(
    doc: str,
    digest: str,
    keys: Sequence[bytes],
    sizes: Sequence[int],
    ids: Sequence[str] | None,
    image_id: str = "",
    name: str = "",
) -> tuple[str, str | None]:
    """An image's template and its ``blob_ids``: of the second kind when every blob (``ids``,
    ``keys`` and ``sizes`` in the row's order, or None when a blob has no id) is found
    in the doc, in that order, as ``blob_object`` writes it; else of the first kind
    (``blob_ids`` None).

    ~7 µs an image of 9 blobs (the doc is read once: the objects are found one after
    the other, and the rest is what the first kind's replacing works on)."""
    if ids and len(ids) == len(keys) == len(sizes):
        if all(i and BLOB_IDS_SEPARATOR not in i and "%" not in i for i in ids):
            text = doc.replace("%", "%%") if "%" in doc else doc
            pieces: list[str] = []
            at = 0
            for n, (i, k, s) in enumerate(zip(ids, keys, sizes, strict=True), _FIRST_HEX + 3):
                obj = blob_object(i, k, s)
                # a layer's object follows the one before it and a comma: no search
                found = at + 1 if text.startswith(obj, at + 1) else text.find(obj, at)
                if found < 0:
                    break
                pieces += (text[at:found], f"%{n}$s")
                at = found + len(obj)
            else:
                pieces.append(text[at:])
                text = "".join(pieces)
                first = f'{{"id":"{image_id}"'
                if image_id and "%" not in image_id and text.startswith(first):
                    text = f'{{"id":"%{_FIRST_HEX + 1}$s' + text[len(first) - 1 :]
                if name and "%" not in name:
                    text = text.replace(f'"name":"{name}"', f'"name":"%{_FIRST_HEX + 2}$s"')
                return _template(text, digest, (), escaped=True), BLOB_IDS_SEPARATOR.join(ids)
    return _template(doc, digest, keys), None


def doc_template(doc: str, digest: str, keys: Iterable[bytes]) -> str:
    """The stored template of the first kind of ``doc`` (its text), for the row's
    ``digest`` and blob keys.

    ~6 µs an image (a split at each "sha256:", not a search for each value).
    """
    return _template(doc, digest, keys)


def _template(doc: str, digest: str, keys: Iterable[bytes], *, escaped: bool = False) -> str:
    """``doc`` with the hex of its ``keys`` (the first kind), its digest and the fragments
    as placeholders; ``escaped``: its "%" are doubled already (the second kind's text)."""
    places: dict[str, str] = {}
    value = digest[len(SHA256_PREFIX) :]
    if _HEX64.fullmatch(value):
        places[value] = f"%{_FIRST_HEX}$s"
    for n, key in enumerate(keys, _FIRST_HEX + 1):
        if len(key) == SHA256_KEY_BYTES:
            places.setdefault(bytes(key).hex(), f"%{n}$s")
    text = doc if escaped or "%" not in doc else doc.replace("%", "%%")
    parts = text.split(SHA256_PREFIX)
    for i in range(1, len(parts)):
        part = parts[i]
        place = places.get(part[:_HEX_DIGITS])
        if place is not None:
            parts[i] = place + part[_HEX_DIGITS:]
    template = SHA256_PREFIX.join(parts)
    for n, fragment in enumerate(DOC_TEMPLATE_FRAGMENTS, 1):
        template = template.replace(fragment, f"%{n}$s")
    return template


def render_doc_template(template: str, values: list[str]) -> str:
    """The JSON a template stands for (what ``format`` does in SQL; for checks and tests)."""
    return _PLACEHOLDER.sub(lambda m: values[int(m[1]) - 1] if m[1] else "%", template)


def registry_of_name(name: str) -> str:
    """The registry id of an image or repository name (``<registryId>/<repository path>``)."""
    return name.split("/", 1)[0]


def registry_number(registry_id: str) -> str:
    """SQL: the number ``images.registry`` holds for a registry whose id is the SQL
    expression ``registry_id`` (sql/120), NULL for a registry never indexed. Uncorrelated,
    it runs once a statement (an InitPlan), and an index compares it like a parameter."""
    return f"(SELECT r.id FROM image_registries AS r WHERE r.name = {registry_id})"


def folder_registry_numbers(folder_id: str) -> str:
    """SQL: the numbers (sql/120) of the registries known to be in the folder whose id is
    the SQL expression ``folder_id`` (``registries``, learned by folder walks)."""
    return (
        "SELECT n.id FROM registries AS r"
        ' JOIN image_registries AS n ON n.name = r.registry_id COLLATE "C"'
        f" WHERE r.folder_id = {folder_id}"
    )


def digest_text(key: bytes) -> str:
    """The digest a stored key stands for (the SQL ``mirror_digest_text``)."""
    if len(key) == SHA256_KEY_BYTES:
        return SHA256_PREFIX + key.hex()
    return bytes(key).rstrip(b"\0").decode()


@dataclass(frozen=True, slots=True)
class Blob:
    id: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.id:
            out["id"] = self.id
        if self.digest:
            out["digest"] = self.digest
        if self.size:
            out["size"] = str(self.size)
        if self.urls:
            out["urls"] = list(self.urls)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Blob:
        return cls(
            id=d.get("id", ""),
            digest=d.get("digest", ""),
            size=int(d.get("size", 0)),
            urls=tuple(d.get("urls", ())),
        )


@dataclass(frozen=True, slots=True)
class Image:
    """A Docker image as the upstream describes it.

    ``name`` is ``<registryId>/<repository path>``, i.e. the repository name;
    ``created_at`` is kept as the upstream's RFC 3339 text (it may carry nanoseconds).
    """

    id: str
    name: str
    digest: str
    compressed_size: int
    config: Blob | None
    layers: tuple[Blob, ...]
    tags: tuple[str, ...]
    created_at: str

    @property
    def registry_id(self) -> str:
        return registry_of_name(self.name)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Config first, then the layers in order."""
        return ((self.config,) if self.config else ()) + self.layers

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.name:
            out["name"] = self.name
        if self.digest:
            out["digest"] = self.digest
        if self.compressed_size:
            out["compressedSize"] = str(self.compressed_size)
        if self.config is not None:
            out["config"] = self.config.to_json()
        if self.layers:
            out["layers"] = [layer.to_json() for layer in self.layers]
        if self.tags:
            out["tags"] = list(self.tags)
        if self.created_at:
            out["createdAt"] = self.created_at
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Image:
        config = d.get("config")
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            digest=d.get("digest", ""),
            compressed_size=int(d.get("compressedSize", 0)),
            config=Blob.from_json(config) if config else None,
            layers=tuple(Blob.from_json(x) for x in d.get("layers", ())),
            tags=tuple(d.get("tags", ())),
            created_at=d.get("createdAt", ""),
        )


class ScopeKind(StrEnum):
    FOLDER = "folder"
    REGISTRY = "registry"
    REPOSITORY = "repository"


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """What one walk covers: a folder, a registry or a repository (``kind:ID``)."""

    kind: ScopeKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"

    @property
    def list_params(self) -> dict[str, str]:
        """The upstream List query parameters that select this scope."""
        key = {
            ScopeKind.FOLDER: "folderId",
            ScopeKind.REGISTRY: "registryId",
            ScopeKind.REPOSITORY: "repositoryName",
        }[self.kind]
        return {key: self.id}

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, sep, ident = text.strip().partition(":")
        if not sep or not ident:
            raise ConfigError(
                f"scope {text!r} is not kind:ID (kinds: folder, registry, repository)"
            )
        try:
            scope_kind = ScopeKind(kind.strip())
        except ValueError:
            raise ConfigError(
                f"scope {text!r} has unknown kind {kind!r} (kinds: folder, registry, repository)"
            ) from None
        ident = ident.strip()
        if scope_kind is ScopeKind.REPOSITORY:
            if not REPOSITORY_NAME_RE.fullmatch(ident):
                raise ConfigError(
                    f"scope {text!r}: repository name does not match the cloud's pattern"
                )
        elif len(ident) > ID_MAX_LEN or not re.fullmatch(r"[A-Za-z0-9_-]+", ident):
            raise ConfigError(
                f"scope {text!r}: id must be 1-{ID_MAX_LEN} letters, digits, '-' or '_'"
            )
        return cls(scope_kind, ident)


class EventType(StrEnum):
    IMAGE_CREATED = "registry.image.created"
    IMAGE_UPDATED = "registry.image.updated"
    IMAGE_DELETED = "registry.image.deleted"
    BLOB_ADDED = "registry.blob.added"
    BLOB_ORPHANED = "registry.blob.orphaned"
    TAG_ADDED = "registry.tag.added"
    TAG_REMOVED = "registry.tag.removed"

    @property
    def topic(self) -> str:
        """The topic suffix: ``images``, ``blobs`` or ``tags`` (the relay adds the prefix)."""
        return self.value.split(".")[1] + "s"


def event_types_matching(patterns: Iterable[str]) -> tuple[str, ...]:
    """The event types ``patterns`` name: exact types, or prefixes ending in ``.*``
    (``registry.tag.*``, ``registry.*``). Raises ``ValueError`` for one that names none."""
    known = [t.value for t in EventType]
    wanted: list[str] = []
    for pattern in patterns:
        if pattern.endswith(".*"):
            names = [t for t in known if t.startswith(pattern[:-1])]
        else:
            names = [t for t in known if t == pattern]
        if not names:
            raise ValueError(
                f"{pattern[:80]!r} names no event type (types: {', '.join(known)}; "
                "or a prefix like registry.tag.*)"
            )
        wanted += [n for n in names if n not in wanted]
    return tuple(wanted)


@dataclass(frozen=True, slots=True)
class Event:
    """A change to publish: written to the outbox in the transaction of the change.

    ``subject`` is the image id, the blob digest or ``<repository>:<tag>``; it is
    also the Kafka key.
    """

    type: EventType
    subject: str
    data: dict[str, Any]
    source: str = "/registry-mirror/ingest"

    @property
    def topic(self) -> str:
        return self.type.topic
