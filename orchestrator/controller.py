"""The controller: the training loop, asynchronous by default.

    start producing groups (bounded by the staleness gate), and supervising workers
    for each step:
        take a batch of fresh complete groups from the buffer
        train one step on it
        wait until the previous version reached every rollout worker
        export the new weights and start publishing them
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
from core.waits import bounded
from orchestrator.buffer import ReplayBuffer
from orchestrator.checkpoint import (
    ControllerState,
    mark_latest,
    step_dir,
    write_controller_state,
)
from orchestrator.ledger import Ledger
from orchestrator.resources import tree_memory_gib
from orchestrator.summaries import batch_metrics, fleet_metrics
from orchestrator.supervisor import Supervisor
from orchestrator.system import System
from rollout.envpool import GroupSpec

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


class Producer:
    """Keeps groups in flight on the env pools and admits finished ones to the buffer."""

    def __init__(
        self,
        system: System,
        buffer: ReplayBuffer,
        cfg: Config,
        state: RunState,
        ledger: Ledger,
        resume: ControllerState | None = None,
    ):
        self.pools = system.pools
        self.buffer = buffer
        self.ledger = ledger
        self.cfg = cfg
        self.state = state
        self.staleness = 0 if cfg.trainer.mode == "sync" else cfg.buffer.max_staleness
        self.first_version = state.version
        self.started = 0
        self.dropped = 0
        self.generated_tokens = 0
        self.next_seed = resume.next_seed if resume else cfg.trainer.seed * 1_000_000
        self._pending = list(resume.pending_seeds) if resume else []
        self._in_flight: dict[asyncio.Task, tuple[int, int, Any]] = {}
        """Each running group call: its task seed, its env pool's slot and handle."""
        self._arrived = asyncio.Event()
        self.system = system
        self.pool_restarts = 0

    def in_flight_seeds(self) -> list[int]:
        """Task seeds of groups started and not yet admitted (a checkpoint keeps them)."""
        return sorted(seed for seed, _, _ in self._in_flight.values()) + list(self._pending)

    def _may_start(self) -> bool:
        steps = self.state.version - self.first_version
        allowed = (steps + self.staleness + 1) * self.cfg.buffer.groups_per_batch
        return self.started - self.dropped < allowed

    async def run(self) -> None:
        while True:
            while self._may_start():
                self._start_group()
            if self._in_flight:
                done, _ = await asyncio.wait(
                    self._in_flight, timeout=0.2, return_when="FIRST_COMPLETED"
                )
                for task in done:
                    await self._admit(task)
            else:
                await asyncio.sleep(0.05)

    async def next_batch(self, timeout_s: float) -> list[Group]:
        deadline = time.monotonic() + timeout_s
        while (groups := self.buffer.take(self.cfg.buffer.groups_per_batch)) is None:
            self._arrived.clear()
            await bounded(
                self._arrived.wait(),
                max(0.0, deadline - time.monotonic()),
                f"{self.cfg.buffer.groups_per_batch} groups for step {self.state.step}",
            )
        return groups

    def _start_group(self) -> None:
        if self._pending:
            seed = self._pending.pop(0)
        else:
            seed, self.next_seed = self.next_seed, self.next_seed + 1
        index = self.started % len(self.pools)
        pool = self.pools[index]
        spec = GroupSpec(group_id=f"g{seed}", task_seed=seed, size=self.cfg.env.group_size)
        task = asyncio.ensure_future(pool.run_group.remote(spec))
        self._in_flight[task] = (seed, index, pool)
        self.ledger.started(spec.group_id, spec.size)
        self.started += 1

    async def _admit(self, task: asyncio.Task) -> None:
        import ray

        seed, index, pool = self._in_flight.pop(task)
        try:
            group: Group = task.result()
        except ray.exceptions.RayActorError as exc:
            await self._pool_lost(index, pool, seed, exc)
            return
        self.generated_tokens += sum(t.num_generated for t in group.trajectories)
        self.ledger.arrived(group)
        if self.buffer.add(group):
            self.ledger.buffered(group)
        else:
            self.dropped += 1
        self._arrived.set()

    async def _pool_lost(self, index: int, pool: Any, seed: int, exc: Exception) -> None:
        """An env pool died with the group: re-run the group, replace the pool once."""
        self._pending.append(seed)
        self.started -= 1
        if self.pools[index] is not pool:
            return  # already replaced when an earlier group of it was lost
        self.pool_restarts += 1
        if self.pool_restarts > self.cfg.supervisor.max_restarts * len(self.pools):
            raise RuntimeError(
                f"env pools died {self.pool_restarts} times (last: {exc}); stopping: "
                "the environment keeps killing its pool"
            )
        log.warning("env pool %d lost (%s); replacing it and re-running g%d", index, exc, seed)
        await self.system.replace_pool(index)

    def stop(self) -> None:
        for task in self._in_flight:
            task.cancel()


async def train(
    system: System,
    cfg: Config,
    logger: MetricsLogger,
    progress: Any = None,
    resume: ControllerState | None = None,
) -> RunState:
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
    producer = Producer(system, buffer, cfg, state, ledger, resume)
    producing = asyncio.create_task(producer.run())
    supervisor = Supervisor(system, cfg.supervisor)
    supervising = asyncio.create_task(supervisor.run()) if cfg.supervisor.enabled else None
    publishing = Publishing(system, overlap=producer.staleness > 0)
    clock = StepClock()
    try:
        for step in range(state.step, cfg.trainer.total_steps):
            state.step = step
            groups = await _race(producer.next_batch(cfg.trainer.batch_timeout_s), producing)
            batch = Batch(groups, state.version)
            metrics = await system.train_step(batch)
            ledger.trained(groups)
            state.trained.extend(_records(batch))
            metrics |= await publishing.wait()  # the previous version is everywhere
            metrics |= await publishing.start(state.version + 1)
            state.version += 1
            metrics |= batch_metrics(groups, batch.learner_version)
            metrics |= buffer.stats() | ledger.stats() | supervisor.stats()
            metrics["fault/pool_restarts"] = float(producer.pool_restarts)
            metrics["fault/learner_restarts"] = float(system.learner_restarts)
            metrics |= fleet_metrics(await system.worker_stats(), await system.pool_stats())
            metrics |= clock.tick(producer.generated_tokens)
            metrics["trainer/version"] = float(state.version)
            if cfg.trainer.checkpoint_every and (step + 1) % cfg.trainer.checkpoint_every == 0:
                metrics |= await checkpoint(system, cfg, state, producer, buffer)
            logger.log(step, metrics)
            state.history.append(metrics)
            if progress is not None:
                progress(step, metrics)
        await publishing.wait()
        if supervising is not None:
            await supervisor.stop(supervising, cfg.rollout.startup_timeout_s)
    finally:
        producer.stop()
        producing.cancel()
        publishing.cancel()
        if supervising is not None:
            supervising.cancel()
    return state


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
