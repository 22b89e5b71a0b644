"""Domain types: plain, frozen, no I/O.

The JSON shape is the upstream's (camelCase, int64 as strings, empty fields
omitted); ``to_json`` / ``from_json`` are the only places that know it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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
    """The stored key of a blob digest (the SQL ``mirror_digest_key``)."""
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
        return self.name.split("/", 1)[0]

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
