"""Types of the C encoder ``mirror/_image_wire.c`` (see ``mirror.image_wire``)."""

from typing import Any

TAGS: dict[str, int]

def image(doc: Any, /) -> bytes | None: ...
def page(images: list[bytes], next_page_token: str, /) -> bytes: ...
