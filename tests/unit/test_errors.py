"""One error tree, in ``mirror/errors.py``, and its drawing there is the truth."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import mirror
from mirror import errors
from mirror.errors import MirrorError

# Exceptions outside mirror/errors.py that are not part of the tree, each with why.
NOT_IN_THE_TREE: set[str] = set()


def drawn_tree() -> dict[str, str]:
    """``{class name: parent name}`` as drawn in the module docstring."""
    doc = errors.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        m = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z]\w+)(?:\s|$)", line)
        if not m or ("──" not in line and m.group(2) != "MirrorError"):
            continue
        depth = line.index(m.group(2))
        name = m.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def actual_tree() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, cls in vars(errors).items():
        if inspect.isclass(cls) and issubclass(cls, MirrorError) and cls is not MirrorError:
            parent = next(b for b in cls.__mro__[1:] if issubclass(b, MirrorError))
            out[name] = parent.__name__
    return out


def mirror_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(mirror.__path__, "mirror.")
        if not m.name.endswith("__main__")
    ]


def test_the_drawing_is_the_hierarchy() -> None:
    drawn = drawn_tree()
    assert "FailedPrecondition" in drawn
    assert drawn == actual_tree()


def test_every_mirror_error_lives_in_errors_py() -> None:
    strays = []
    for name in mirror_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            if name == "mirror.errors":
                continue
            qualified = f"{name}.{cls.__name__}"
            if cls.__name__.startswith("_") or qualified in NOT_IN_THE_TREE:
                continue  # private control flow that never leaves its module
            strays.append(qualified)
    assert strays == [], "define these in mirror/errors.py and draw them in its tree"


def test_moved_errors_keep_their_old_bases() -> None:
    # callers that caught them as ValueError still do
    assert issubclass(errors.MalformedImage, ValueError)
    assert issubclass(errors.EnvelopeError, ValueError)
