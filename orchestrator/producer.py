"""Producer: keeps groups in flight on the env pools and admits finished ones.

A group may start while the staleness gate allows it (groups started and not
dropped stay within (versions trained + bound + 1) batches) and the balancer's
in-flight limit has room. A finished group goes through the ledger into the
buffer. A group whose env pool died is re-run on a replacement pool; groups in
flight at a checkpoint are re-run first after a resume. A group that lost
members to environment faults is re-run or admitted as orchestrator.env_faults
decides, and every group feeds the env circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from core.config import Config
from core.types import Group
from core.waits import bounded
from orchestrator.balancer import Balancer
from orchestrator.buffer import ReplayBuffer
from orchestrator.checkpoint import ControllerState
from orchestrator.env_faults import EnvBreaker, needs_rerun
from orchestrator.ledger import Ledger
from orchestrator.system import System
from rollout.envpool import GroupSpec

log = logging.getLogger(__name__)


class LoopPosition(Protocol):
    """Where the training loop is (the controller's RunState)."""

    version: int
    step: int


def staleness_bound(cfg: Config) -> int:
    """Versions a group may lag when started: the buffer's bound, 0 in sync mode."""
    return 0 if cfg.trainer.mode == "sync" else cfg.buffer.max_staleness


class Producer:
    """Keeps groups in flight on the env pools and admits finished ones to the buffer."""

    def __init__(
        self,
        system: System,
        buffer: ReplayBuffer,
        cfg: Config,
        state: LoopPosition,
        ledger: Ledger,
        balancer: Balancer,
        resume: ControllerState | None = None,
    ):
        self.system = system
        self.buffer = buffer
        self.ledger = ledger
        self.balancer = balancer
        self.cfg = cfg
        self.state = state
        self.staleness = staleness_bound(cfg)
        self.first_version = state.version
        self.started = 0
        self.dropped = 0
        self.generated_tokens = 0
        self.next_seed = resume.next_seed if resume else cfg.trainer.seed * 1_000_000
        self._pending = list(resume.pending_seeds) if resume else []
        self.reruns: dict[int, int] = dict(resume.reruns) if resume else {}
        """Seed -> times its group was re-run after an environment failure."""
        self.breaker = EnvBreaker(cfg.env.breaker_window, cfg.env.breaker_failure_rate)
        self._in_flight: dict[asyncio.Task, tuple[int, int, Any]] = {}
        """Each running group call: its task seed, its env pool's slot and handle."""
        self._arrived = asyncio.Event()
        self.pool_restarts = 0

    @property
    def pools(self) -> list[Any]:
        """The system's env pools (a replaced pool takes its slot in place)."""
        return self.system.pools

    def in_flight_seeds(self) -> list[int]:
        """Task seeds of groups started and not yet admitted (a checkpoint keeps them)."""
        return sorted(seed for seed, _, _ in self._in_flight.values()) + list(self._pending)

    def _may_start(self) -> bool:
        steps = self.state.version - self.first_version
        allowed = (steps + self.staleness + 1) * self.cfg.buffer.groups_per_batch
        within_gate = self.started - self.dropped < allowed
        return within_gate and len(self._in_flight) < self.balancer.in_flight_limit

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
        spec = GroupSpec(self._group_id(seed), task_seed=seed, size=self.cfg.env.group_size)
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
        self.breaker.record(group)
        if self._rerun(group, seed):
            return
        if self.buffer.add(group):
            self.ledger.buffered(group)
        else:
            self.dropped += 1
        self._arrived.set()

    def _group_id(self, seed: int) -> str:
        reruns = self.reruns.get(seed, 0)
        return f"g{seed}" if reruns == 0 else f"g{seed}.r{reruns}"

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
