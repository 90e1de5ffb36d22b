"""The controller: the training loop, asynchronous by default.

    start producing groups (producer.py) and supervising the workers (supervisor.py)
    for each step:
        take a batch of fresh complete groups from the buffer
        train one step on it
        wait until the previous version reached every rollout worker
        export the new weights and start publishing them
        observe: metrics, ledger, and the balancer's in-flight limit
        every N steps, checkpoint
        log

Rollouts never wait for the learner except as the staleness gate requires:
a group may start only while (groups started and not dropped) stays within
(version + max_staleness + 1) batches. With `trainer.mode=sync` the gate is 0
versions wide, which makes the same loop generate, train, publish in turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from core.config import Config
from core.metrics import MetricsLogger
from core.types import Batch, Group
from orchestrator.balancer import Balancer, Observation
from orchestrator.buffer import ReplayBuffer
from orchestrator.checkpoint import (
    ControllerState,
    mark_latest,
    step_dir,
    write_controller_state,
)
from orchestrator.ledger import Audit, Ledger
from orchestrator.producer import Producer, staleness_bound
from orchestrator.resources import tree_memory_gib
from orchestrator.summaries import batch_metrics, fleet_metrics
from orchestrator.supervisor import Supervisor
from orchestrator.system import System

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedRecord:
    trajectory_id: str
    min_version: int
    max_version: int
    learner_version: int
    turn_versions: tuple[tuple[int, ...], ...]
    """The distinct versions of each turn's generated tokens."""
    workers: tuple[str, ...]
    """The worker of each turn."""
    lock_broken: bool


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


async def train(
    system: System,
    cfg: Config,
    logger: MetricsLogger,
    progress: Any = None,
    resume: ControllerState | None = None,
) -> RunState:
    run = Run.assemble(system, cfg, resume)
    state = run.state
    try:
        for step in range(state.step, cfg.trainer.total_steps):
            state.step = step
            groups, learner_wait_s = await run.next_batch()
            batch = Batch(groups, state.version)
            metrics = await system.train_step(batch)
            run.ledger.trained(groups)
            state.trained.extend(_records(batch))
            metrics |= await run.publishing.wait()  # the previous version is everywhere
            metrics |= await run.publishing.start(state.version + 1)
            state.version += 1
            metrics |= await run.observe(groups, batch.learner_version, learner_wait_s)
            if cfg.trainer.checkpoint_every and (step + 1) % cfg.trainer.checkpoint_every == 0:
                metrics |= await checkpoint(system, cfg, state, run.producer, run.buffer)
            logger.log(step, metrics)
            state.history.append(metrics)
            if progress is not None:
                progress(step, metrics)
        await run.finish()
        # One synchronous read, so the ledger and the producer agree on what is in flight.
        state.ledger, state.audit = run.ledger.state(), run.producer.audit()
    finally:
        run.cancel()
    return state


@dataclass
class Run:
    """The parts of one training loop and the background tasks they run."""

    system: System
    cfg: Config
    state: RunState
    ledger: Ledger
    buffer: ReplayBuffer
    balancer: Balancer
    producer: Producer
    supervisor: Supervisor
    publishing: Publishing
    clock: StepClock
    producing: asyncio.Task
    supervising: asyncio.Task | None

    @classmethod
    def assemble(cls, system: System, cfg: Config, resume: ControllerState | None) -> Run:
        state = RunState(version=system.version, step=resume.next_step if resume else 0)
        ledger = Ledger(cfg.buffer.replay_ratio)
        buffer = ReplayBuffer(
            cfg.buffer.max_staleness,
            cfg.buffer.capacity_groups,
            lambda: state.version,
            cfg.buffer.replay_ratio,
            cfg.buffer.drop_zero_variance,
            on_leave=ledger.left,
        )
        if resume:
            buffer.restore(resume.buffer)
            ledger.restore(resume.ledger)
        gate_width = (staleness_bound(cfg) + 1) * cfg.buffer.groups_per_batch
        balancer = Balancer(cfg.balancer, cfg.buffer.groups_per_batch, gate_width)
        producer = Producer(system, buffer, cfg, state, ledger, balancer, resume)
        supervisor = Supervisor(system, cfg.supervisor)
        return cls(
            system,
            cfg,
            state,
            ledger,
            buffer,
            balancer,
            producer,
            supervisor,
            Publishing(system, overlap=producer.staleness > 0),
            StepClock(),
            asyncio.create_task(producer.run()),
            asyncio.create_task(supervisor.run()) if cfg.supervisor.enabled else None,
        )

    async def next_batch(self) -> tuple[list[Group], float]:
        """The next batch of groups and how long the learner waited for it."""
        started = time.perf_counter()
        waiting = self.producer.next_batch(self.cfg.trainer.batch_timeout_s)
        groups = await _race(waiting, self.producing)
        return groups, time.perf_counter() - started

    async def observe(
        self, groups: list[Group], learner_version: int, learner_wait_s: float
    ) -> dict[str, float]:
        """The step's metrics beyond the learner's; adapts the balancer."""
        workers = await self.system.worker_stats()
        if self.cfg.balancer.enabled:
            self.balancer.update(_observe(learner_wait_s, self.buffer, workers))
        metrics = batch_metrics(groups, learner_version)
        metrics |= self.buffer.stats() | self.ledger.stats() | self.supervisor.stats()
        metrics |= fleet_metrics(workers, await self.system.pool_stats())
        metrics |= self.balancer.stats() | self.clock.tick(self.producer.generated_tokens)
        metrics |= self.producer.stats()
        metrics["fault/learner_restarts"] = float(self.system.learner_restarts)
        metrics["perf/learner_wait_s"] = learner_wait_s
        metrics["trainer/version"] = float(self.state.version)
        return metrics

    async def finish(self) -> None:
        """Let the last publish and any worker replacement under way complete."""
        await self.publishing.wait()
        if self.supervising is not None:
            await self.supervisor.stop(self.supervising, self.cfg.rollout.startup_timeout_s)

    def cancel(self) -> None:
        self.producer.stop()
        self.producing.cancel()
        self.publishing.cancel()
        if self.supervising is not None:
            self.supervising.cancel()


async def checkpoint(
    system: System, cfg: Config, state: RunState, producer: Producer, buffer: ReplayBuffer
) -> dict[str, float]:
    """Save the learner and the controller's state after step `state.step`."""
    started = time.perf_counter()
    directory = step_dir(cfg.logger.run_dir, state.step + 1)
    await system.save_checkpoint(directory)
    controller = ControllerState(
        next_step=state.step + 1,
        version=state.version,
        next_seed=producer.next_seed,
        pending_seeds=producer.in_flight_seeds(),
        reruns=dict(producer.reruns),
        losses=dict(producer.losses),
        issued=dict(producer.issued),
        buffer=buffer.state(),
        ledger=producer.ledger.state(),
    )
    write_controller_state(directory, controller)
    mark_latest(cfg.logger.run_dir, directory)
    log.info("checkpoint after step %d: %s", state.step, directory)
    return {"checkpoint/s": time.perf_counter() - started}


class Publishing:
    """Exports each new version and publishes it to the rollout workers. With
    `overlap`, the publish (a rolling drain under `rollout.lock=trajectory`) runs
    while the learner trains the next step; one publish at a time."""

    def __init__(self, system: System, overlap: bool):
        self.system = system
        self.overlap = overlap
        self._task: asyncio.Task | None = None

    async def start(self, version: int) -> dict[str, float]:
        started = time.perf_counter()
        snapshot = await self.system.export_weights(version)
        metrics = {"sync/export_s": time.perf_counter() - started}
        self._task = asyncio.create_task(self.system.publish(snapshot))
        if not self.overlap:
            metrics |= await self.wait()
        return metrics

    async def wait(self) -> dict[str, float]:
        task, self._task = self._task, None
        return await task if task is not None else {}

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class StepClock:
    """Step time, rollout throughput over the step, elapsed time and memory."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.last_tokens = 0

    def tick(self, generated_tokens: int) -> dict[str, float]:
        now = time.perf_counter()
        metrics = {
            "perf/rollout_tokens_per_s": (generated_tokens - self.last_tokens) / (now - self.last),
            "perf/step_s": now - self.last,
            "perf/elapsed_s": now - self.started,
            "perf/memory_gib": tree_memory_gib(),
        }
        self.last, self.last_tokens = now, generated_tokens
        return metrics


def _observe(
    learner_wait_s: float, buffer: ReplayBuffer, workers: dict[str, dict[str, Any]]
) -> Observation:
    depth = [w["in_flight"] for w in workers.values()]
    return Observation(
        learner_wait_s=learner_wait_s,
        buffered_groups=len(buffer),
        stale_drops_total=buffer.counts.dropped_stale,
        queue_depth=sum(depth) / len(depth) if depth else 0.0,
    )


def _records(batch: Batch) -> list[TrainedRecord]:
    return [
        TrainedRecord(
            t.trajectory_id,
            t.min_version,
            t.max_version,
            batch.learner_version,
            tuple(
                tuple(sorted(set(t.versions[u.start : u.start + u.num_generated]))) for u in t.turns
            ),
            tuple(u.worker_id for u in t.turns),
            t.lock_broken,
        )
        for t in batch.trajectories
        if t.status.trainable
    ]


async def _race(waiting: Any, producing: asyncio.Task) -> Any:
    """Await `waiting`, but surface the producer's crash instead of timing out."""
    waiter = asyncio.ensure_future(waiting)
    await asyncio.wait({waiter, producing}, return_when="FIRST_COMPLETED")
    if not waiter.done():
        waiter.cancel()
        producing.result()  # raises the producer's error
        raise RuntimeError("the rollout producer stopped")
    return waiter.result()
