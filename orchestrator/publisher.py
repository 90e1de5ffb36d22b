"""Publisher: brings a new weight version to every rollout worker, per the lock policy.

- `turn` and `none`: every worker loads at once; its engine pauses as the policy
  says (let in-flight turns finish / freeze them and resume on the new weights).
- `trajectory`: a rolling update, one worker at a time, so the others keep
  generating: the env pools stop placing new trajectories on the worker, the
  publisher waits for the ones locked to it (at most `rollout.lock_timeout_s`;
  those still running are then marked lock-broken), the worker loads, re-opens.

A worker that dies or hangs during an update is marked dead in every pool and
skipped: the run goes on while one worker lives. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from core.config import RolloutConfig
from core.shm import WeightSnapshot
from core.waits import bounded

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.05
POOL_CALL_TIMEOUT_S = 30.0


class NoLiveWorkers(RuntimeError):
    """Every rollout worker is dead: nothing can generate any more."""


@dataclass
class Publisher:
    workers: dict[str, Any]
    pools: list[Any]
    cfg: RolloutConfig
    dead: set[str] = field(default_factory=set)

    async def publish(self, snapshot: WeightSnapshot) -> dict[str, float]:
        """Load `snapshot` into every live worker; returns the sync metrics."""
        started = time.perf_counter()
        live = [w for w in self.workers if w not in self.dead]
        if self.cfg.lock == "trajectory":
            syncs = [await self._rolling_update(w, snapshot) for w in live]
        else:
            syncs = await asyncio.gather(*[self._update(w, snapshot) for w in live])
        loaded = [s for s in syncs if s is not None]
        if not loaded:
            raise NoLiveWorkers(f"no rollout worker is alive to load weights v{snapshot.version}")
        return {
            "sync/pause_s": max(s["pause_s"] for s in loaded),
            "sync/drain_s": max(s["drain_s"] for s in loaded),
            "sync/load_s": max(s["load_s"] for s in loaded),
            "sync/total_s": time.perf_counter() - started,
            "sync/lock_broken": sum(s.get("lock_broken", 0.0) for s in loaded),
            "sync/bytes": float(snapshot.total_bytes),
            "fault/dead_workers": float(len(self.dead)),
        }

    def revive(self, worker_id: str, handle: Any) -> None:
        """A replacement actor serves `worker_id` from now on."""
        self.workers[worker_id] = handle
        self.dead.discard(worker_id)

    async def _rolling_update(
        self, worker_id: str, snapshot: WeightSnapshot
    ) -> dict[str, float] | None:
        started = time.perf_counter()
        await self._on_pools("set_draining", worker_id, True)
        try:
            remaining = await self._drain(worker_id)
            broken = sum(await self._on_pools("break_locks", worker_id)) if remaining else 0
            sync = await self._update(worker_id, snapshot)
        finally:
            await self._on_pools("set_draining", worker_id, False)
        if sync is None:
            return None
        sync["drain_s"] = time.perf_counter() - started - sync["load_s"]
        sync["lock_broken"] = float(broken)
        return sync

    async def _drain(self, worker_id: str) -> int:
        """Wait for the trajectories locked to `worker_id`; returns how many are left."""
        deadline = time.monotonic() + self.cfg.lock_timeout_s
        while (left := sum(await self._on_pools("sessions_on", worker_id))) > 0:
            if time.monotonic() >= deadline:
                log.warning(
                    "%s: %d trajectories still running after rollout.lock_timeout_s=%.0fs; "
                    "they continue on the new weights, recorded as lock-broken",
                    worker_id,
                    left,
                    self.cfg.lock_timeout_s,
                )
                return left
            await asyncio.sleep(DRAIN_POLL_S)
        return 0

    async def _update(self, worker_id: str, snapshot: WeightSnapshot) -> dict[str, float] | None:
        import ray

        try:
            return await bounded(
                self.workers[worker_id].update_weights.remote(snapshot, self.cfg.lock),
                self.cfg.sync_timeout_s,
                f"{worker_id} to load weights v{snapshot.version}",
            )
        except (ray.exceptions.RayActorError, TimeoutError) as exc:
            log.error("%s lost during the update (%s); marking it dead", worker_id, exc)
            self.dead.add(worker_id)
            await self._on_pools("mark_dead", worker_id)
            return None

    async def _on_pools(self, method: str, *args: Any) -> list[Any]:
        calls = [getattr(pool, method).remote(*args) for pool in self.pools]
        return await bounded(asyncio.gather(*calls), POOL_CALL_TIMEOUT_S, f"env pools: {method}")
