"""Producer: keeps groups in flight on the env pools and admits finished ones.

A group may start while the staleness gate allows it (groups started and not
left untrained stay within (versions trained + bound + 1) batches; in sync mode never
beyond the batches the run has left to train) and the balancer's in-flight
limit has room. The producer issues each group's trajectory ids and keeps them
(`issued`), apart from the ledger, so `audit` can hold the ledger to them. A
finished group goes through the ledger into the buffer. A group whose env pool
died is re-run on a replacement pool; groups in flight at a checkpoint are
re-run first after a resume. A group awaited past supervisor.group_deadline_s,
or one that comes back with other members than were issued, is declared lost
(`lost` in the ledger, `fault/groups_lost`) and its task re-run; a pool that then
fails a health ping is replaced. A group that lost members to environment faults
is re-run or admitted as orchestrator.env_faults decides, and every group feeds
the env circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from core.config import Config
from core.records import GroupSpec
from core.types import Group
from core.waits import bounded
from orchestrator.balancer import Balancer
from orchestrator.buffer import ReplayBuffer
from orchestrator.checkpoint import ControllerState
from orchestrator.curriculum import TaskSampler
from orchestrator.env_faults import EnvBreaker, needs_rerun
from orchestrator.fleet import Fleet
from orchestrator.ledger import Audit, Ledger, audit

log = logging.getLogger(__name__)


class LoopPosition(Protocol):
    """Where the training loop is (the controller's RunState)."""

    version: int
    step: int


def _untrained(buffer: ReplayBuffer) -> int:
    """Groups that left `buffer` without being trained: too stale (on arrival or
    waiting in line), filtered, or evicted. Each frees its place in the staleness
    gate; one that went stale in line and kept it would shrink the gate for good."""
    counts = buffer.counts
    return counts.dropped_stale + counts.filtered + counts.evicted


def staleness_bound(cfg: Config) -> int:
    """Versions a group may lag when started: the buffer's bound, 0 in sync mode."""
    return 0 if cfg.trainer.mode == "sync" else cfg.buffer.max_staleness


@dataclass(frozen=True)
class Running:
    """A group call the producer awaits."""

    spec: GroupSpec
    pool_index: int
    pool: Any
    ref: Any
    """The Ray call's ObjectRef (to cancel it)."""
    started_at: float
    """time.monotonic() when the call went out."""


class Producer:
    """Keeps groups in flight on the env pools and admits finished ones to the buffer."""

    def __init__(
        self,
        fleet: Fleet,
        buffer: ReplayBuffer,
        cfg: Config,
        state: LoopPosition,
        ledger: Ledger,
        balancer: Balancer,
        tasks: TaskSampler,
        resume: ControllerState | None = None,
    ):
        self.fleet = fleet
        self.buffer = buffer
        self.ledger = ledger
        self.balancer = balancer
        self.cfg = cfg
        self.state = state
        self.staleness = staleness_bound(cfg)
        self.first_version = state.version
        self.batches_left = cfg.trainer.total_steps - state.step
        """Batches the run will still train (the sync gate stops there)."""
        self.deadline_s = cfg.supervisor.group_deadline_s
        self.started = 0
        self._untrained_before = _untrained(buffer)
        self.generated_tokens = 0
        self.groups_lost = 0
        self.tasks = tasks
        """Which task starts next (orchestrator.curriculum)."""
        self._pending = list(resume.pending_seeds) if resume else []
        self.reruns: dict[int, int] = dict(resume.reruns) if resume else {}
        """Seed -> times its group was re-run after an environment failure."""
        self.losses: dict[int, int] = dict(getattr(resume, "losses", {}) or {})
        """Seed -> times its group was declared lost."""
        self.issued: dict[str, tuple[str, ...]] = _issued_at(resume, ledger)
        """Group id -> the trajectory ids issued for it: the count the ledger is held to."""
        self.breaker = EnvBreaker(cfg.env.breaker_window, cfg.env.breaker_failure_rate)
        self._in_flight: dict[asyncio.Task, Running] = {}
        self._arrived = asyncio.Event()
        self.pool_restarts = 0

    @property
    def pools(self) -> list[Any]:
        """The fleet's env pools (a replaced pool takes its slot in place)."""
        return self.fleet.pools

    def saved_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the producer (ControllerState's fields)."""
        tasks = self.tasks.state()
        return {
            "next_seed": tasks.get("next_seed", 0),
            "tasks": tasks,
            "pending_seeds": self.in_flight_seeds(),
            "reruns": dict(self.reruns),
            "losses": dict(self.losses),
            "issued": dict(self.issued),
        }

    def in_flight_seeds(self) -> list[int]:
        """Task seeds of groups started and not yet admitted (a checkpoint keeps them)."""
        return sorted(r.spec.task_seed for r in self._in_flight.values()) + list(self._pending)

    def live_groups(self) -> set[str]:
        """Groups someone will still bring back: awaited now, or queued to run again
        under the id they will get."""
        awaited = {r.spec.group_id for r in self._in_flight.values()}
        return awaited | {self._group_id(seed) for seed in self._pending}

    def audit(self) -> Audit:
        """The ledger held to what this producer issued and awaits."""
        now = time.monotonic()
        overdue = {
            r.spec.group_id
            for r in self._in_flight.values()
            if now - r.started_at > self.deadline_s
        }
        return audit(self.ledger.states, self.issued, self.live_groups(), overdue)

    def stats(self) -> dict[str, float]:
        metrics = self.audit().stats()
        metrics["ledger/issued"] = float(sum(len(ids) for ids in self.issued.values()))
        metrics["fault/groups_lost"] = float(self.groups_lost)
        metrics["fault/pool_restarts"] = float(self.pool_restarts)
        metrics["fault/group_reruns"] = float(sum(self.reruns.values()))
        return metrics | self.breaker.stats() | self.tasks.stats()

    def _may_start(self) -> bool:
        batches = self.state.version - self.first_version + self.staleness + 1
        if self.cfg.trainer.mode == "sync":
            # Every group of a sync batch is fresh and trained, so nothing beyond the
            # last batch is needed (a started one would end the run untrained).
            batches = min(batches, self.batches_left)
        alive = self.started - (_untrained(self.buffer) - self._untrained_before)
        within_gate = alive < batches * self.cfg.buffer.groups_per_batch
        return within_gate and len(self._in_flight) < self.balancer.in_flight_limit

    def idle(self) -> bool:
        """Nothing in flight and nothing may start: the engines get no group from this
        producer until the next version opens the gate."""
        return not self._in_flight and not self._may_start()

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
                await self._reap_overdue()
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
        seed = self._pending.pop(0) if self._pending else self.tasks.next_seed()
        index = self.started % len(self.pools)
        pool = self.pools[index]
        group_id = self._group_id(seed)
        ids = tuple(f"{group_id}/{member}" for member in range(self.cfg.env.group_size))
        spec = GroupSpec(group_id, seed, len(ids), ids)
        ref = pool.run_group.remote(spec)
        task = asyncio.ensure_future(ref)
        self._in_flight[task] = Running(spec, index, pool, ref, time.monotonic())
        self.issued[group_id] = ids
        self.ledger.started(ids)
        self.started += 1

    async def _admit(self, task: asyncio.Task) -> None:
        import ray

        running = self._in_flight.pop(task)
        try:
            group: Group = task.result()
        except ray.exceptions.RayActorError as exc:
            await self._pool_lost(running, exc)
            return
        if mismatch := _mismatch(group, running.spec):
            self._declare_lost(running, mismatch)
            return
        self.generated_tokens += sum(t.num_generated for t in group.trajectories)
        self.ledger.arrived(group)
        self.breaker.record(group)
        if self._rerun(group, running.spec.task_seed):
            return
        self.tasks.record(group)
        if self.buffer.add(group):
            self.ledger.buffered(group)
        self._arrived.set()

    def _group_id(self, seed: int) -> str:
        """g<seed>, then .r<n> after n environment re-runs and .l<m> after m losses:
        a task run again after its ids went terminal gets new ids."""
        reruns, losses = self.reruns.get(seed, 0), self.losses.get(seed, 0)
        return f"g{seed}" + (f".r{reruns}" if reruns else "") + (f".l{losses}" if losses else "")

    def _rerun(self, group: Group, seed: int) -> bool:
        """Set a group with environment-failed members aside and queue its task
        again (env.rerun_failed_groups, at most env.max_group_reruns times)."""
        env = self.cfg.env
        if not (env.rerun_failed_groups and needs_rerun(group)):
            return False
        if self.reruns.get(seed, 0) >= env.max_group_reruns:
            log.warning(
                "group %s still failing after %d re-runs; admitting its survivors",
                group.group_id,
                env.max_group_reruns,
            )
            return False
        self.ledger.rerun(group)
        self.reruns[seed] = self.reruns.get(seed, 0) + 1
        self._pending.append(seed)
        self.started -= 1
        return True

    async def _reap_overdue(self) -> None:
        """Declare every group awaited past the deadline lost (its call cancelled),
        then ping each pool that held one and replace it if it does not answer."""
        now = time.monotonic()
        overdue = [
            (task, r)
            for task, r in self._in_flight.items()
            if now - r.started_at > self.deadline_s and not task.done()  # done: admitted next
        ]
        suspects: dict[tuple[int, int], Running] = {}
        for task, running in overdue:
            del self._in_flight[task]
            _cancel(task, running.ref)
            self._declare_lost(
                running, f"no answer within supervisor.group_deadline_s={self.deadline_s:g}s"
            )
            suspects[(running.pool_index, id(running.pool))] = running
        for running in suspects.values():
            await self._check_pool(running.pool_index, running.pool)

    def _declare_lost(self, running: Running, why: str) -> None:
        """The group's trajectories will never come: `lost`, counted, task queued again."""
        spec = running.spec
        seed = spec.task_seed
        self.ledger.lost(spec.trajectory_ids)
        self.groups_lost += 1
        self.losses[seed] = self.losses.get(seed, 0) + 1
        log.warning(
            "group %s on pool-%d lost after waiting %.1fs: %s; running task %d again",
            spec.group_id,
            running.pool_index,
            time.monotonic() - running.started_at,
            why,
            seed,
        )
        if self.losses[seed] > self.cfg.supervisor.max_restarts:
            raise RuntimeError(
                f"the group of task {seed} was lost {self.losses[seed]} times (last: {why}); "
                "stopping: the env pools keep losing this task (supervisor.max_restarts)"
            )
        self._pending.append(seed)
        self.started -= 1

    async def _check_pool(self, index: int, pool: Any) -> None:
        """Replace the pool in slot `index` if it does not answer a bounded ping."""
        import ray

        if self.pools[index] is not pool:
            return  # replaced already
        try:
            await bounded(
                pool.stats.remote(),
                self.cfg.supervisor.health_timeout_s,
                f"pool-{index} to answer a health ping",
            )
        except (ray.exceptions.RayActorError, TimeoutError) as exc:
            await self._replace_pool(index, f"no answer to a health ping ({type(exc).__name__})")

    async def _pool_lost(self, running: Running, exc: Exception) -> None:
        """An env pool died with the group: re-run the group, replace the pool once."""
        self._pending.append(running.spec.task_seed)
        self.started -= 1
        if self.pools[running.pool_index] is running.pool:
            # else already replaced when an earlier group of it was lost
            await self._replace_pool(
                running.pool_index, f"{exc}; re-running {running.spec.group_id}"
            )

    async def _replace_pool(self, index: int, why: str) -> None:
        self.pool_restarts += 1
        if self.pool_restarts > self.cfg.supervisor.max_restarts * len(self.pools):
            raise RuntimeError(
                f"env pools failed {self.pool_restarts} times (last: {why}); stopping: "
                "the environment keeps killing its pool"
            )
        log.warning("env pool %d lost (%s); replacing it", index, why)
        self.fleet.replace_pool(index)

    def stop(self) -> None:
        for task in self._in_flight:
            task.cancel()


def _mismatch(group: Group, spec: GroupSpec) -> str | None:
    """What differs between the members that arrived and those issued, if anything."""
    arrived = [t.trajectory_id for t in group.trajectories]
    if sorted(arrived) == sorted(spec.trajectory_ids):
        return None
    missing = sorted(set(spec.trajectory_ids) - set(arrived))
    extra = sorted(set(arrived) - set(spec.trajectory_ids))
    twice = sorted({t for t in arrived if arrived.count(t) > 1})
    return f"came back with members missing {missing}, extra {extra}, twice {twice}"


def _cancel(task: asyncio.Task, ref: Any) -> None:
    """Cancel a group call: the Ray task in the pool (an asyncio cancel there) and our wait."""
    import ray

    task.cancel()
    try:
        ray.cancel(ref)
    except Exception as exc:  # noqa: BLE001 - the pool may be gone; the group is lost anyway
        log.debug("cancelling a lost group's call: %s", exc)


def _issued_at(resume: ControllerState | None, ledger: Ledger) -> dict[str, tuple[str, ...]]:
    """The issued ids a resumed run starts from. A checkpoint written before ids
    were kept apart has none: they are rebuilt from its ledger (trusted, once)."""
    if resume is None:
        return {}
    saved: Mapping[str, tuple[str, ...]] | None = getattr(resume, "issued", None)
    if saved:
        return dict(saved)
    rebuilt: dict[str, list[str]] = {}
    for trajectory_id in ledger.states:
        rebuilt.setdefault(trajectory_id.rsplit("/", 1)[0], []).append(trajectory_id)
    return {group: tuple(ids) for group, ids in rebuilt.items()}
