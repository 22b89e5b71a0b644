"""The objects a process made while starting, kept out of the garbage collector's full passes.

Modules, the SDK's generated classes and descriptors, grpc, aiohttp and the app
come to ~50,000 tracked objects that live as long as the process; a full
(generation 2) collection walks them all each time, 20-60 ms measured on this
machine, inside whatever requests are being served. ``gc.freeze()`` after
startup moves them to the permanent generation: later full passes walk only
what was made since (the collector itself stays on, for cycles made while
serving).
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then exclude every object alive now from later collections."""
    gc.collect()
    gc.freeze()


# A walk allocates some 35 containers an image (the parsed page, its rows and
# events), nearly all freed by reference counting at once; at the default gen-0
# threshold (700 allocations) the cyclic collector ran every ~20 images, and its
# older generations kept walking the pages still queued.
INGEST_GC_THRESHOLDS = (10_000, 10, 10)


def tune_for_ingest() -> None:
    """``mirror ingest``: the startup heap frozen, and the collector run less often."""
    freeze_startup_heap()
    gc.set_threshold(*INGEST_GC_THRESHOLDS)
