"""System: the two owners of a run's actors, started and stopped together.

`learner` (orchestrator.learners) owns the DeepSpeed ranks; `fleet`
(orchestrator.fleet) owns the rollout workers and env pools. Both come up at
once (the learner's start overlaps the vLLM engines), in the seats of the run's
placement (orchestrator.actors), and the start-up log shows where each actor
landed (the placement table); shutdown stops the fleet, the learner, and removes
the run's weight snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import Config
from core.records import Placement
from core.shm import DEFAULT_ROOT
from core.waits import bounded
from orchestrator import actors
from orchestrator.checkpoint import checkpoint_root
from orchestrator.fleet import Fleet
from orchestrator.learners import Learner
from orchestrator.placement import table

log = logging.getLogger(__name__)


@dataclass
class System:
    """The learner and the rollout fleet of one run."""

    cfg: Config
    model_path: str
    learner: Learner
    fleet: Fleet
    weights_dir: Path

    @classmethod
    async def start(cls, cfg: Config, model_path: str) -> System:
        actors.start_ray(cfg)
        # An impossible placement, or one the weights cannot reach, fails here, before
        # any actor starts.
        actors.check_weight_reach(cfg, actors.reserve(cfg))
        run_id = f"{Path(cfg.logger.run_dir).name}-{os.getpid()}"
        weights_dir = Path(DEFAULT_ROOT) / "asyncrl" / run_id
        started = time.perf_counter()
        learner_starting = asyncio.ensure_future(Learner.start(cfg, model_path, weights_dir))
        fleet = await Fleet.start(cfg, model_path)
        learner = await learner_starting
        fleet.payload_source = learner.payload  # weights for workers off the learner's node
        log.info("learner and rollout workers up in %.0fs", time.perf_counter() - started)
        system = cls(cfg, model_path, learner, fleet, weights_dir)
        rows = table(await system.placements()).splitlines()
        for row in [f"placement={cfg.placement}", *rows]:
            log.info("%s", row)  # one record per row: every console line says whose it is
        log.info(
            "checkpoints: %s (every learner node must reach it at this path)",
            checkpoint_root(cfg),
        )
        return system

    async def placements(self) -> list[tuple[str, str, Placement]]:
        """Where each actor runs, as it reports it: (role, actor, placement) rows."""
        named = [("learner", f"rank-{i}", r) for i, r in enumerate(self.learner.group.ranks)]
        named += [("rollout", w, h) for w, h in self.fleet.workers.items()]
        named += [("env", f"pool-{i}", p) for i, p in enumerate(self.fleet.pools)]
        where = await bounded(
            asyncio.gather(*[handle.placement.remote() for *_, handle in named]),
            self.cfg.ray.call_timeout_s,
            "every actor to report its placement",
        )
        return [(role, name, w) for (role, name, _), w in zip(named, where, strict=True)]

    async def shutdown(self) -> None:
        await self.fleet.shutdown()
        self.learner.kill()
        shutil.rmtree(self.weights_dir, ignore_errors=True)
