"""The parts of one training loop, wired together: the ledger, the replay buffer,
the balancer, the producer and the supervisor, the two background tasks they run
(producing groups, supervising workers), and the step's metrics gathered from each
part's own report. The controller drives them; this module only assembles,
observes and stops them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from core.config import Config
from core.records import EngineStats
from core.types import Group
from orchestrator.balancer import Balancer, Observation
from orchestrator.buffer import ReplayBuffer
from orchestrator.checkpoint import ControllerState, checkpoint_root, save_run
from orchestrator.curriculum import TaskCounts, task_counts, task_sampler
from orchestrator.evaluation import Evaluator
from orchestrator.ledger import Audit, Ledger
from orchestrator.producer import Producer, staleness_bound
from orchestrator.summaries import StepClock, TrainedRecord, batch_metrics, fleet_metrics
from orchestrator.supervisor import Supervisor
from orchestrator.system import System


@dataclass
class RunState:
    version: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    trained: list[TrainedRecord] = field(default_factory=list)
    """Every trajectory handed to the learner, with the versions that produced it."""
    ledger: dict[str, Any] = field(default_factory=dict)
    """The ledger's final state (Ledger.state()), taken when the loop has finished."""
    audit: Audit | None = None
    """The ledger held to the producer's issued ids and live groups, at the same moment."""
    evaluations: list[dict[str, float]] = field(default_factory=list)
    """Every evaluation's eval/* metrics, in the order they finished."""


@dataclass
class Run:
    system: System
    cfg: Config
    state: RunState
    ledger: Ledger
    buffer: ReplayBuffer
    balancer: Balancer
    producer: Producer
    supervisor: Supervisor
    evaluator: Evaluator
    clock: StepClock
    producing: asyncio.Task
    supervising: asyncio.Task | None

    @classmethod
    def assemble(
        cls,
        system: System,
        cfg: Config,
        resume: ControllerState | None,
        tasks: TaskCounts | None = None,
    ) -> Run:
        """Wire the parts; `tasks` are the envs' task counts (preflight's), counted
        here when not given."""
        tasks = tasks or task_counts(cfg)
        state = RunState(version=system.fleet.version, step=resume.next_step if resume else 0)
        ledger = Ledger(cfg.buffer.replay_ratio)
        buffer = ReplayBuffer.from_config(cfg.buffer, lambda: state.version, ledger.left)
        if resume:
            buffer.restore(resume.buffer)
            ledger.restore(resume.ledger)
        gate_width = (staleness_bound(cfg) + 1) * cfg.buffer.groups_per_batch
        balancer = Balancer(cfg.balancer, cfg.buffer.groups_per_batch, gate_width)
        sampler = task_sampler(cfg, tasks.train, resume)
        producer = Producer(system.fleet, buffer, cfg, state, ledger, balancer, sampler, resume)
        supervisor = Supervisor(system.fleet, cfg.supervisor)
        clock = StepClock()
        evaluator = Evaluator(system.fleet, cfg, tasks, clock.started)
        producing = asyncio.create_task(producer.run())
        supervising = asyncio.create_task(supervisor.run()) if cfg.supervisor.enabled else None
        parts = (ledger, buffer, balancer, producer, supervisor, evaluator, clock)
        return cls(system, cfg, state, *parts, producing, supervising)

    @property
    def overlap(self) -> bool:
        """Publish a version while the learner trains the next (async mode)."""
        return self.producer.staleness > 0

    def engines_idle(self) -> bool:
        """The rollout engines have nothing to do until the next version: no group in
        flight or allowed to start, no publish, no evaluation (the learner may borrow
        their cores for the rest of its step)."""
        return self.producer.idle() and not self.system.fleet.busy

    async def next_batch(self) -> tuple[list[Group], float]:
        """The next batch of groups and how long the learner waited for it."""
        started = time.perf_counter()
        waiting = self.producer.next_batch(self.cfg.trainer.batch_timeout_s)
        groups = await _race(waiting, self.producing)
        return groups, time.perf_counter() - started

    async def evaluate_if_due(self, first: bool) -> None:
        """Start evaluating the version every worker now has, if it is due (it stays
        pinned there until the evaluation ends)."""
        if self.evaluator.due(self.state.version, first):
            await self.evaluator.start(self.state.version)

    async def final_evaluations(self) -> list[dict[str, float]]:
        """The evaluation still under way and that of the last version, if not done."""
        ended = await self.evaluator.final(self.state.version)
        self.state.evaluations.extend(ended)
        return ended

    def finished_evaluations(self) -> list[dict[str, float]]:
        """The evaluations that have ended since the last call (each logged as a row of
        its own at the step it ended in)."""
        ended = self.evaluator.finished()
        self.state.evaluations.extend(ended)
        return ended

    async def observe(
        self, groups: list[Group], learner_version: int, learner_wait_s: float
    ) -> dict[str, float]:
        """The step's metrics beyond the learner's; adapts the balancer."""
        fleet = self.system.fleet
        workers = await fleet.worker_stats()
        if self.cfg.balancer.enabled:
            self.balancer.update(self._observation(learner_wait_s, workers))
        metrics = batch_metrics(groups, learner_version)
        metrics |= fleet_metrics(workers, await fleet.pool_stats()) | fleet.stats()
        for part in (self.buffer, self.ledger, self.supervisor, self.balancer, self.producer):
            metrics |= part.stats()
        metrics |= self.system.learner.stats() | self.clock.tick(self.producer.generated_tokens)
        metrics["perf/learner_wait_s"] = learner_wait_s
        metrics["trainer/version"] = float(self.state.version)
        return metrics

    def checkpoint_due(self, step: int) -> bool:
        every = self.cfg.trainer.checkpoint_every
        return bool(every) and (step + 1) % every == 0

    async def checkpoint(self) -> dict[str, float]:
        state = self.state
        return await save_run(
            self.system.learner,
            checkpoint_root(self.cfg),
            state.step,
            state.version,
            self.producer,
            self.buffer,
            self.ledger,
        )

    async def finish(self) -> None:
        """Let the last publish and any worker replacement under way complete; then
        read the ledger and its audit at one moment."""
        await self.system.fleet.synced()
        if self.supervising is not None:
            await self.supervisor.stop(self.supervising, self.cfg.rollout.startup_timeout_s)
        self.state.ledger, self.state.audit = self.ledger.state(), self.producer.audit()

    def cancel(self) -> None:
        self.evaluator.cancel()
        self.producer.stop()
        self.producing.cancel()
        if self.supervising is not None:
            self.supervising.cancel()

    def _observation(self, learner_wait_s: float, workers: dict[str, EngineStats]) -> Observation:
        depth = [w.in_flight for w in workers.values()]
        counts = self.buffer.counts
        return Observation(
            learner_wait_s=learner_wait_s,
            buffered_groups=len(self.buffer),
            expired_total=counts.dropped_stale - counts.arrived_stale,
            late_total=counts.arrived_stale,
            queue_depth=sum(depth) / len(depth) if depth else 0.0,
        )


async def _race(waiting: Any, producing: asyncio.Task) -> Any:
    """Await `waiting`, but surface the producer's crash instead of timing out."""
    waiter = asyncio.ensure_future(waiting)
    await asyncio.wait({waiter, producing}, return_when="FIRST_COMPLETED")
    if not waiter.done():
        waiter.cancel()
        producing.result()  # raises the producer's error
        raise RuntimeError("the rollout producer stopped")
    return waiter.result()
