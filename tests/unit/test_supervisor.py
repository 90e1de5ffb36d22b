"""Supervisor decisions on a stand-in fleet: dead and hung workers are replaced,
healthy ones left alone, and a worker that keeps dying trips its breaker."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from core.config import SupervisorConfig
from orchestrator.supervisor import Supervisor


class Worker:
    def __init__(self, state: str):
        self.state = state
        self.health = SimpleNamespace(remote=self._health)

    async def _health(self):
        import ray

        if self.state == "dead":
            raise ray.exceptions.RayActorError()
        if self.state == "hung":
            await asyncio.sleep(10)
        return {"ok": True}


class System:
    """A stand-in for orchestrator.fleet.Fleet's membership calls."""

    def __init__(self, states: dict[str, str], survives_restart: bool = True):
        self.workers = {w: Worker(s) for w, s in states.items()}
        self.survives_restart = survives_restart
        self.replaced: list[str] = []

    async def health(self, worker_id: str, timeout_s: float) -> dict:
        return await asyncio.wait_for(self.workers[worker_id].health.remote(), timeout_s)

    async def replace_worker(self, worker_id: str) -> None:
        self.replaced.append(worker_id)
        self.workers[worker_id] = Worker("ok" if self.survives_restart else "dead")


def _check(supervisor: Supervisor) -> None:
    async def once():
        for worker_id in await supervisor.unhealthy():
            await supervisor.replace(worker_id)

    asyncio.run(once())


def test_dead_and_hung_workers_are_replaced_healthy_ones_are_not():
    system = System({"a": "ok", "b": "dead", "c": "hung"})
    supervisor = Supervisor(system, SupervisorConfig(health_timeout_s=0.05))
    _check(supervisor)
    assert system.replaced == ["b", "c"]
    _check(supervisor)
    assert system.replaced == ["b", "c"]  # replacements are healthy
    assert supervisor.stats() == {"fault/worker_restarts": 2.0, "fault/breakers_open": 0.0}


def test_a_worker_that_keeps_dying_trips_its_breaker():
    system = System({"a": "ok", "b": "dead"}, survives_restart=False)
    supervisor = Supervisor(system, SupervisorConfig(health_timeout_s=0.05, max_restarts=2))
    for _ in range(5):
        _check(supervisor)
    assert system.replaced == ["b", "b"]
    assert supervisor.broken == {"b"}
    assert supervisor.stats()["fault/breakers_open"] == 1.0
