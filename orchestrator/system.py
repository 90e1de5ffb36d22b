"""System: the two owners of a run's actors, started and stopped together.

`learner` (orchestrator.learners) owns the DeepSpeed ranks; `fleet`
(orchestrator.fleet) owns the rollout workers and env pools. Both come up at
once (the learner's start overlaps the vLLM engines'); shutdown stops the fleet,
the learner, and removes the run's weight snapshots.
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
from core.shm import DEFAULT_ROOT
from orchestrator import actors
from orchestrator.fleet import Fleet
from orchestrator.learners import Learner

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
        run_id = f"{Path(cfg.logger.run_dir).name}-{os.getpid()}"
        weights_dir = Path(DEFAULT_ROOT) / "asyncrl" / run_id
        started = time.perf_counter()
        learner_starting = asyncio.ensure_future(Learner.start(cfg, model_path, weights_dir))
        fleet = await Fleet.start(cfg, model_path)
        learner = await learner_starting
        log.info("learner and rollout workers up in %.0fs", time.perf_counter() - started)
        return cls(cfg, model_path, learner, fleet, weights_dir)

    async def shutdown(self) -> None:
        await self.fleet.shutdown()
        self.learner.kill()
        shutil.rmtree(self.weights_dir, ignore_errors=True)
