"""Types of the C encoder ``mirror/_image_wire.c`` (see ``mirror.image_wire``)."""

from typing import Any

TAGS: dict[str, int]

def image(doc: Any, /) -> bytes | None: ...
def doc(text: bytes, /) -> bytes | None: ...
def page(images: list[bytes], next_page_token: str, /) -> bytes: ...
def fill(
    template: bytes,
    digest: str,
    keys: bytes,
    sizes: bytes | None = None,
    blob_ids: str | None = None,
    image_id: str | None = None,
    name: str | None = None,
    /,
) -> bytes | None: ...
