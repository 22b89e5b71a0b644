"""Who may import whom (docs/ARCHITECTURE.md, "Layers"), checked on every import in mirror/.

A unit is a top-level module or package of ``mirror/``. A unit may import units of
lower layers only, never its own layer's neighbours or anything above it. Every
import counts, including those inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

MIRROR = Path(__file__).resolve().parents[2] / "mirror"

# Lowest first; the table in docs/ARCHITECTURE.md draws the same order.
LAYERS: list[set[str]] = [
    {"errors", "exit_codes", "dsn", "log_format", "byte_lru"},
    {"model", "grpc_status", "signals", "listen", "heap"},
    {"settings", "listing", "image_wire"},
    {"grpc_wire"},  # protobuf messages <-> the List contract, shared by the simulator and grpc_api
    {"cli_options", "store", "upstream", "devservices"},
    {"stats", "events"},
    {"ingest"},  # its command also runs the stats folder
    {"api"},
    {"grpc", "grpc_api"},  # the gRPC servicers: over api's readers and store
    {"runner"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {unit: n for n, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "mirror" and len(parts) > 1 else None


def imports() -> list[tuple[str, str, str]]:
    """``(importing unit, imported unit, file)`` for every import between two units."""
    found = []
    for path in sorted(MIRROR.rglob("*.py")):
        rel = path.relative_to(MIRROR.parent).with_suffix("")
        source = unit_of(".".join(rel.parts))
        if source is None:  # mirror/__init__.py
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "mirror":  # from mirror import errors
                    names = [f"mirror.{alias.name}" for alias in node.names]
            for name in names:
                target = unit_of(name)
                if target is not None and target != source:
                    found.append((source, target, str(path.relative_to(MIRROR.parent))))
    return found


def test_every_unit_has_a_layer() -> None:
    units = {p.stem for p in MIRROR.glob("*.py")} | {
        p.parent.name for p in MIRROR.glob("*/__init__.py")
    }
    units.discard("__init__")
    unplaced = sorted(units - LAYER_OF.keys())
    assert not unplaced, f"place these in LAYERS and in docs/ARCHITECTURE.md: {unplaced}"


def test_imports_go_down_the_layers_only() -> None:
    upward = [
        f"{file}: {source} imports {target}"
        for source, target, file in imports()
        if LAYER_OF.get(target, -1) >= LAYER_OF.get(source, len(LAYERS))
    ]
    assert not upward, "\n".join(upward)


def test_the_check_sees_imports_inside_functions() -> None:
    # mirror/cli.py imports the store inside `db upgrade`: the check must count it
    assert ("cli", "store", "mirror/cli.py") in imports()


def test_the_architecture_doc_draws_the_same_layers() -> None:
    doc = (MIRROR.parent / "docs" / "ARCHITECTURE.md").read_text()
    drawn: dict[str, int] = {}
    for line in doc.splitlines():
        m = re.match(r"^\| (\d+) \| (.+?) \|", line)
        if m:
            for unit in re.findall(r"`([\w]+)(?:\.py|/)`", m.group(2)):
                drawn[unit] = int(m.group(1))
    assert drawn == LAYER_OF
