"""The chaos driver: runs beside the training loop and kills actors per the schedule.

`ChaosDriver(cfg, run_dir)` is passed to `orchestrator.run.run(cfg, alongside=...)`;
it kills, with `ray.kill(actor, no_restart=True)`, a rollout worker, an env pool or
a learner rank, one at a time, and after each kill waits (bounded) until the run
has recovered on its own before the next delay starts. It records each kill
(`Kill`); recovery itself is the supervisor's, the fleet's and the learner's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.chaos.schedule import ChaosConfig, plan
from core.waits import bounded
from orchestrator.checkpoint import checkpoints_dir, latest

log = logging.getLogger(__name__)

POLL_S = 0.2


@dataclass
class Kill:
    at_s: float
    """Seconds since the driver started."""
    target: str
    """The actor: rollout-1, pool-0, learner-rank-0."""
    kind: str
    version: int
    """Policy version the rollout workers served when it was killed."""
    recovered_after_s: float | None = None
    how: str = "not recovered before the run ended"
    timed_out: bool = False


class ChaosDriver:
    """Runs next to the training loop (`run(cfg, alongside=driver)`) and kills per plan."""

    def __init__(self, cfg: ChaosConfig, run_dir: str):
        self.cfg = cfg
        self.run_dir = run_dir
        self.plan = plan(cfg)
        self.kills: list[Kill] = []
        self.started = 0.0

    async def __call__(self, system: Any) -> None:
        self.started = time.monotonic()
        for planned in self.plan:
            await asyncio.sleep(planned.delay_s)
            kill = getattr(self, f"_kill_{planned.target}")
            recovered, how = await kill(system, planned.pick)
            record = self.kills[-1]
            try:
                await bounded(
                    _until(recovered), self.cfg.recovery_timeout_s, f"{record.target} to recover"
                )
                record.how = await how()
            except Exception as exc:  # noqa: BLE001 - a recovery that fails is the finding
                record.timed_out, record.how = True, f"not recovered: {exc}"
                continue
            record.recovered_after_s = round(self._now() - record.at_s, 1)
            log.warning(
                "chaos: %s recovered after %.1fs: %s",
                record.target,
                record.recovered_after_s,
                record.how,
            )

    async def _kill_rollout(self, system: Any, pick: int) -> tuple[Callable, Callable]:
        live = sorted(system.fleet.live_workers)
        worker_id = live[pick % len(live)]
        handle = system.fleet.workers[worker_id]
        self._kill(system, handle, worker_id, "rollout")

        def recovered() -> bool:
            return (
                system.fleet.workers[worker_id] is not handle and worker_id not in system.fleet.dead
            )

        async def how() -> str:
            return f"supervisor replaced it under the same id, loaded with v{system.fleet.version}"

        return recovered, how

    async def _kill_pool(self, system: Any, pick: int) -> tuple[Callable, Callable]:
        index = pick % len(system.fleet.pools)
        handle = system.fleet.pools[index]
        try:
            stats = await bounded(handle.stats.remote(), 10.0, f"pool-{index} stats")
            running = stats.in_flight
        except Exception:  # noqa: BLE001 - only for the report
            running = "?"
        self._kill(system, handle, f"pool-{index}", "pool")

        def recovered() -> bool:
            return system.fleet.pools[index] is not handle

        async def how() -> str:
            await bounded(
                system.fleet.pools[index].stats.remote(), 60.0, f"new pool-{index} to answer"
            )
            return f"producer replaced it; its {running} episodes in flight re-run on the new pool"

        return recovered, how

    async def _kill_learner(self, system: Any, pick: int) -> tuple[Callable, Callable]:
        # A learner killed before the first checkpoint restarts from the initial
        # policy; wait (bounded) for one so the kill exercises the restore.
        try:
            await bounded(
                _until(lambda: latest(checkpoints_dir(self.run_dir)) is not None),
                self.cfg.recovery_timeout_s,
                "a first checkpoint",
            )
        except TimeoutError:
            log.warning("chaos: no checkpoint yet; killing the learner anyway")
        group, restarts = system.learner.group, system.learner.restarts
        rank = pick % len(group.ranks)
        self._kill(system, group.ranks[rank], f"learner-rank-{rank}", "learner")
        seen: dict[str, Any] = {}

        def recovered() -> bool:
            # Restarted, then two versions on: the second was exported by the new ranks
            # (the first may have been in flight from the old ones).
            if system.learner.restarts <= restarts:
                return False
            if "version" not in seen:
                checkpoint = latest(checkpoints_dir(self.run_dir))
                seen["version"], seen["checkpoint"] = system.fleet.version, checkpoint
            return system.fleet.version >= seen["version"] + 2

        async def how() -> str:
            source = seen.get("checkpoint")
            where = f"checkpoints/{source.name}" if source else "the initial policy"
            return (
                f"restart_learner: new rank(s) from {where}; trained on to v{system.fleet.version}"
            )

        return recovered, how

    def _kill(self, system: Any, actor: Any, target: str, kind: str) -> None:
        import ray

        ray.kill(actor, no_restart=True)
        self.kills.append(Kill(round(self._now(), 1), target, kind, system.fleet.version))
        log.warning(
            "chaos: killed %s at %.1fs (kill %d of %d)",
            target,
            self._now(),
            len(self.kills),
            self.cfg.kills,
        )

    def _now(self) -> float:
        return time.monotonic() - self.started


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(POLL_S)
