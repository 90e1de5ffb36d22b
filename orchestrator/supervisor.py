"""Supervisor: keeps the rollout fleet whole while a run goes on.

Every `supervisor.interval_s` it asks each rollout worker for its health,
bounded by `supervisor.health_timeout_s`. A worker that is dead, or hung past
the timeout, is replaced: a new actor under the same id starts, loads the
current weights and is handed to the publisher and every env pool (sessions
that were on the lost worker have moved already, or start afresh, recorded
lock-broken). A worker replaced more than `supervisor.max_restarts` times
trips its circuit breaker: it stays out, with one clear log line, and the
run goes on with the others.

Env pools are supervised by the producer, which sees their deaths first (a
group call fails) and re-runs the lost groups; it asks `Fleet.replace_pool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

from core.config import SupervisorConfig
from core.waits import bounded

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, fleet: Any, cfg: SupervisorConfig):
        self.fleet = fleet
        self.cfg = cfg
        self.restarts: Counter[str] = Counter()
        self.broken: set[str] = set()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            for worker_id in await self.unhealthy():
                await self.replace(worker_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.cfg.interval_s)

    async def stop(self, running: asyncio.Task, timeout_s: float) -> None:
        """Stop after the check or replacement under way (a half-started worker
        would leave the fleet short); bounded by `timeout_s`."""
        self._stopping.set()
        await bounded(running, timeout_s, "the supervisor to finish a worker replacement")

    async def unhealthy(self) -> list[str]:
        """Workers that are dead or do not answer in time (breaker-open ones excluded)."""
        watched = [w for w in self.fleet.workers if w not in self.broken]
        answers = await asyncio.gather(
            *[self._healthy(w) for w in watched], return_exceptions=False
        )
        return [w for w, ok in zip(watched, answers, strict=True) if not ok]

    async def replace(self, worker_id: str) -> bool:
        """Replace `worker_id` unless its breaker is open; True if it serves again."""
        if self.restarts[worker_id] >= self.cfg.max_restarts:
            if worker_id not in self.broken:
                self.broken.add(worker_id)
                log.error(
                    "%s failed %d times: circuit breaker open, the run goes on without it "
                    "(raise supervisor.max_restarts to keep replacing it)",
                    worker_id,
                    self.restarts[worker_id],
                )
            return False
        self.restarts[worker_id] += 1
        log.warning("replacing rollout worker %s (restart %d)", worker_id, self.restarts[worker_id])
        try:
            await self.fleet.replace_worker(worker_id)
        except Exception as exc:  # noqa: BLE001 - a failed restart counts, the next check retries
            log.error("restarting %s failed: %s", worker_id, exc)
            return False
        return True

    def stats(self) -> dict[str, float]:
        return {
            "fault/worker_restarts": float(sum(self.restarts.values())),
            "fault/breakers_open": float(len(self.broken)),
        }

    async def _healthy(self, worker_id: str) -> bool:
        import ray

        try:
            await self.fleet.health(worker_id, self.cfg.health_timeout_s)
            return True
        except (ray.exceptions.RayActorError, TimeoutError):
            return False
