"""FaultyPool: a real EnvPool that loses a group on purpose, for the ledger tests.

Its n-th `run_group` call does what `faults[n]` says, then behaves as EnvPool:
- `hang`: the call never returns, while the pool stays alive and answers every
  other call (a stuck group, not a dead actor); a cancel ends it;
- `drop`: the group runs, then comes back with its last member missing (a result
  dropped on the floor).
Started in place of a System's pools by `faulty_pool`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.config import EnvConfig, RolloutConfig
from core.records import GroupSpec
from core.types import Group
from rollout.envpool import EnvPool


class FaultyPool(EnvPool):
    def __init__(
        self,
        pool_id: str,
        workers: dict[str, Any],
        model_path: str,
        env: EnvConfig,
        rollout: RolloutConfig,
        faults: tuple[str, ...] = (),
    ):
        super().__init__(pool_id, workers, model_path, env, rollout)
        self._faults = list(faults)

    async def run_group(self, spec: GroupSpec) -> Group:
        fault = self._faults.pop(0) if self._faults else "ok"
        if fault == "hang":
            await asyncio.Event().wait()
        group = await super().run_group(spec)
        if fault == "drop":
            group.trajectories.pop()
        return group


def faulty_pool(system: Any, env: EnvConfig, faults: tuple[str, ...]) -> Any:
    """A FaultyPool actor on `system`'s workers, started and answering."""
    import ray

    pool = (
        ray.remote(FaultyPool)
        .options(num_cpus=0, max_concurrency=100_000)
        .remote("pool-0", system.fleet.workers, system.model_path, env, system.cfg.rollout, faults)
    )
    ray.get(pool.stats.remote(), timeout=120)
    return pool
