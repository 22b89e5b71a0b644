"""The running simulator: its registry, faults, operations and churn, built from one config."""

from __future__ import annotations

import random
from dataclasses import dataclass

from aiohttp import web

from mirror.upstream.simulator.churn import Churn
from mirror.upstream.simulator.config import Faults, SimulatorConfig
from mirror.upstream.simulator.generator import RegistryModel
from mirror.upstream.simulator.operations import Operations
from mirror.upstream.simulator.state import SimulatedRegistry


@dataclass(slots=True)
class Simulator:
    """Everything one simulator serves; tests reach it as ``app[SIMULATOR]``."""

    config: SimulatorConfig
    registry: SimulatedRegistry
    faults: Faults
    operations: Operations
    churn: Churn
    fault_rng: random.Random

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> Simulator:
        model = RegistryModel(
            images=config.images,
            seed=config.seed,
            folders=config.folders,
            registries_per_folder=config.registries_per_folder,
        )
        registry = SimulatedRegistry(model)
        return cls(
            config=config,
            registry=registry,
            faults=config.faults(),
            operations=Operations(registry, rng=random.Random(f"{config.seed}:operations")),
            churn=Churn(registry, config.churn, random.Random(f"{config.seed}:churn")),
            fault_rng=random.Random(config.fault_seed),
        )


SIMULATOR = web.AppKey("simulator", Simulator)
