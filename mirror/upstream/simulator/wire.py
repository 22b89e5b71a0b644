"""The upstream's wire shapes the simulator produces: cloud ids, digests, RFC 3339 times.

Everything here is a pure function of its arguments, so a generated registry is
the same on every run with the same seed.
"""

from __future__ import annotations

import hashlib
import statistics
import time

ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_BODY_LEN = 17  # a cloud id is a 3-letter prefix and 17 characters of [0-9a-z]
ID_SPACE = 36**ID_BODY_LEN

# byte -> an id character; the slight bias of 256 % 36 does not matter for fake ids
BYTE_TO_ID_CHAR = bytes(ord(ID_ALPHABET[b % 36]) for b in range(256))


def hash_bytes(key: str) -> bytes:
    """64 pseudo-random bytes for ``key`` (BLAKE2b: fast and stable across platforms)."""
    return hashlib.blake2b(key.encode(), digest_size=64).digest()


def id_from_bytes(prefix: str, raw: bytes) -> str:
    """A cloud-like id (``prefix`` + 17 of [0-9a-z]) from at least 17 random bytes."""
    return prefix + raw[:ID_BODY_LEN].translate(BYTE_TO_ID_CHAR).decode("ascii")


_TRIPLES = [a + b + c for a in ID_ALPHABET for b in ID_ALPHABET for c in ID_ALPHABET]
_PAIRS = [a + b for a in ID_ALPHABET for b in ID_ALPHABET]
_B3 = 36**3
_B6 = 36**6
_B9 = 36**9


def id_from_int(prefix: str, value: int) -> str:
    """A cloud-like id whose body is ``value`` in base 36, 17 digits: ids sort as the values do."""
    # split into machine-sized halves first, then three digits at a time from a table
    high, low = divmod(value % ID_SPACE, _B9)
    a, rest = divmod(low, _B6)
    b, c = divmod(rest, _B3)
    d, rest = divmod(high, _B6)
    e, f = divmod(rest, _B3)
    return prefix + _PAIRS[d] + _TRIPLES[e] + _TRIPLES[f] + _TRIPLES[a] + _TRIPLES[b] + _TRIPLES[c]


def int_from_id(prefix: str, image_id: str) -> int | None:
    """The inverse of ``id_from_int``; None when ``image_id`` is not of that shape."""
    if len(image_id) != len(prefix) + ID_BODY_LEN or not image_id.startswith(prefix):
        return None
    body = image_id[len(prefix) :]
    if body.strip(ID_ALPHABET):  # int(..., 36) would also take upper case
        return None
    return int(body, 36)


def digest_from_bytes(raw: bytes) -> str:
    """An OCI content digest (``sha256:`` + 64 hex digits) from 32 random bytes."""
    return "sha256:" + raw[:32].hex()


_NORMAL_BITS = 12
NORMAL_SHIFT = 16 - _NORMAL_BITS  # two random bytes, shifted right by this, index the table
# standard normal quantiles at the midpoints of 4096 equal bins: a cheap inverse CDF
NORMAL_QUANTILES = [
    statistics.NormalDist().inv_cdf((i + 0.5) / (1 << _NORMAL_BITS))
    for i in range(1 << _NORMAL_BITS)
]


def unit_float(raw: bytes) -> float:
    """A float in (0, 1) from 7 random bytes."""
    return (int.from_bytes(raw[:7], "big") + 0.5) / 2**56


_HOURS_MINUTES = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SECONDS = [f"{sec:02d}" for sec in range(60)]
_DATES: dict[int, str] = {}


def rfc3339(ns: int) -> str:
    """A UTC timestamp as protobuf's JSON mapping writes it: 0, 3, 6 or 9 fractional digits."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    day, second_of_day = divmod(seconds, 86_400)
    date = _DATES.get(day)
    if date is None:
        if len(_DATES) > 100_000:
            _DATES.clear()
        date = _DATES[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))
    minute, second = divmod(second_of_day, 60)
    text = date + _HOURS_MINUTES[minute] + _SECONDS[second]
    if nanos == 0:
        return text + "Z"
    if nanos % 1_000_000 == 0:
        return f"{text}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{text}.{nanos // 1_000:06d}Z"
    return f"{text}.{nanos:09d}Z"
