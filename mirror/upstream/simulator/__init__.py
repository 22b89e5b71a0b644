"""A faithful fake of the cloud Container Registry ImageService REST API (and its Operations).

Public surface:

- ``SimulatorConfig``: the generated registry and initial faults;
- ``create_simulator_app(config)``: the aiohttp app (``app[SIMULATOR]`` is the ``Simulator``);
- ``start_simulator`` / ``serve_simulator``: the app on a real port, in-process;
- ``Simulator.registry`` (a ``SimulatedRegistry``): the upstream's truth for tests
  (``get``, ``all_images``, ``ids``, ``count``, ``push``, ``retag``, ``delete``, ``changes_after``).

See ``docs/SIMULATOR.md``.
"""

from mirror.upstream.simulator.app import create_simulator_app
from mirror.upstream.simulator.config import Faults, PageTokenStyle, SimulatorConfig
from mirror.upstream.simulator.runtime import SIMULATOR, Simulator
from mirror.upstream.simulator.server import RunningSimulator, serve_simulator, start_simulator
from mirror.upstream.simulator.state import Change, ChangeType, SimulatedRegistry

__all__ = [
    "SIMULATOR",
    "Change",
    "ChangeType",
    "Faults",
    "PageTokenStyle",
    "RunningSimulator",
    "SimulatedRegistry",
    "Simulator",
    "SimulatorConfig",
    "create_simulator_app",
    "serve_simulator",
    "start_simulator",
]
