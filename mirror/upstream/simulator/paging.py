"""List pages and their tokens, offset-style or cursor-style.

A token is opaque to clients: URL-safe base64 of ``style:binding:position``,
where ``binding`` is a short hash of what the listing selects and orders
(``ListRequest.query_key``), so a token replayed with another scope, filter
or order is refused (``INVALID_ARGUMENT``), and ``position`` is:

- offset style: the rank of the next image. Images deleted before that rank
  shift later images forward, which a walk then skips, and pushed images shift
  them back, which a walk then sees twice (as many real APIs behave);
- cursor style: the id of the last image returned; the next page starts after
  its sort key, so images present throughout are seen exactly once.

A page has a ``nextPageToken`` exactly when more images follow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from mirror.errors import InvalidArgument
from mirror.listing import ListRequest
from mirror.upstream.simulator.config import PageTokenStyle
from mirror.upstream.simulator.state import SimulatedRegistry


async def list_page(
    registry: SimulatedRegistry, request: ListRequest, style: PageTokenStyle
) -> tuple[list[int], str]:
    """One List page for ``request``: its images' refs and the next page token ('' on the last page)."""
    view = await registry.view(request.scope, request.filter, request.order)
    size = request.page_size
    binding = _binding(request)
    position = decode_token(request.page_token, style, binding) if request.page_token else None
    if style is PageTokenStyle.OFFSET:
        offset = int(position) if position is not None else 0
        refs = view.page_at(offset, size)
        following = offset + len(refs)
        token = encode_token(style, binding, str(following)) if following < len(view) else ""
    else:
        if position is None:
            refs = view.page_at(0, size + 1)
        else:
            ref = registry.ref_of(position)
            if ref is None:
                raise InvalidArgument("invalid pageToken: it names no image")
            refs = view.page_after(view.key(ref), size + 1)
        more = len(refs) > size
        refs = refs[:size]
        token = encode_token(style, binding, registry.image_id(refs[-1])) if more else ""
    return refs, token


def list_body(registry: SimulatedRegistry, refs: list[int], token: str) -> bytes:
    """The ListImagesResponse JSON: ``images`` and ``nextPageToken``, each omitted when empty."""
    if not refs:
        return b'{"nextPageToken":"%b"}' % token.encode() if token else b"{}"
    images = b",".join(map(registry.json_bytes, refs))
    if token:  # URL-safe base64: nothing to escape
        return b'{"images":[%b],"nextPageToken":"%b"}' % (images, token.encode())
    return b'{"images":[%b]}' % images


def encode_token(style: PageTokenStyle, binding: str, position: str) -> str:
    raw = f"{style.value}:{binding}:{position}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str, style: PageTokenStyle, binding: str) -> str:
    """The position a token carries; ``InvalidArgument`` when it is not one of ours for this listing."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        token_style, token_binding, position = raw.decode("ascii").split(":", 2)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("invalid pageToken: malformed") from None
    if token_style != style.value:
        raise InvalidArgument("invalid pageToken: not a token of this service")
    if token_binding != binding:
        raise InvalidArgument(
            "invalid pageToken: it belongs to another listing (scope, filter or orderBy differ)"
        )
    if style is PageTokenStyle.OFFSET and not (position.isascii() and position.isdigit()):
        raise InvalidArgument("invalid pageToken: malformed")
    if style is PageTokenStyle.CURSOR and not position:
        raise InvalidArgument("invalid pageToken: malformed")
    return position


def _binding(request: ListRequest) -> str:
    return hashlib.blake2b(request.query_key.encode(), digest_size=6).hexdigest()
