"""The fleet's publishing and membership on stand-in actors: every live worker loads a
version, `trajectory` locking drains one worker at a time, a worker lost mid-update is
marked dead everywhere, each update is confirmed (version and per-tensor checksums,
a mismatch raising with the worker's name) and its transport logged, a replacement
loads the published version, and the control
plane's short calls and shutdown are bounded by their config.

A fake actor method's `.remote(...)` returns an awaitable, as Ray's ObjectRef is
awaitable (`ray/includes/object_ref.pyi:56`, `__await__`); a dead actor's call raises
`ray.exceptions.RayActorError` when awaited (`ray/exceptions.py`, ActorDiedError).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import ray
import torch

from core.config import Config
from core.records import EngineStats, Placement, SyncResult, Transfer
from core.shm import write_snapshot
from orchestrator import fleet as fleet_module
from orchestrator.fleet import Fleet, NoLiveWorkers, WeightMismatch


def _method(fn):
    return SimpleNamespace(remote=lambda *args: fn(*args))


class FakeWorker:
    """`corrupt`: the index of a tensor it reports holding with other contents;
    `stale`: it reports the version before the one it was sent; `node`: the Ray node
    it reports (RolloutWorker.placement)."""

    def __init__(
        self,
        name: str,
        dead: bool = False,
        hang_s: float = 0.0,
        corrupt: int | None = None,
        stale: bool = False,
        node: str = "",
    ):
        self.name, self.dead, self.hang_s = name, dead, hang_s
        self.corrupt, self.stale, self.node = corrupt, stale, node
        self.loaded: list[int] = []
        self.payloads: list[Any] = []
        self.placement = _method(self._placement)
        self.slept: list[tuple[int, str]] = []
        self.sleep = _method(self._sleep)
        self.update_weights = _method(self._update)
        self.stats = _method(self._stats)
        self.shutdown = _method(self._shutdown)
        self.start = _method(self._start)

    async def _update(self, snapshot, lock, payload=None) -> SyncResult:
        if self.dead:
            raise ray.exceptions.RayActorError()
        self.loaded.append(snapshot.version)
        self.payloads.append(payload)
        checksums = [e.checksum for e in snapshot.entries]
        if self.corrupt is not None:
            checksums[self.corrupt] ^= 1
        return SyncResult(
            snapshot.version - self.stale,
            pause_s=0.01,
            load_s=0.01,
            drain_s=0.0,
            bytes=snapshot.total_bytes,
            transport="shm",
            transfers=(Transfer("shm", snapshot.total_bytes, 0.01),),
            checksums=tuple(checksums),
            digest_s=0.002,
        )

    async def _stats(self) -> EngineStats:
        return EngineStats(worker_id=self.name, version=self.loaded[-1] if self.loaded else 0)

    async def _shutdown(self) -> None:
        await asyncio.sleep(self.hang_s)

    async def _start(self) -> str:
        return self.name

    async def _sleep(self, level: int, lock: str) -> float:
        if self.dead:
            raise ray.exceptions.RayActorError()
        self.slept.append((level, lock))
        return 0.02

    async def _placement(self) -> Placement:
        return Placement("10.0.0.1", self.node, (), (0,))


class FakePool:
    """Records the fleet's bookkeeping calls; `sessions` trajectories stay locked to a
    draining worker for `drain_calls` polls."""

    def __init__(self, drain_calls: int = 0, hang_s: float = 0.0):
        self.calls: list[tuple] = []
        self.drain_calls, self.hang_s = drain_calls, hang_s
        for name in ("set_draining", "break_locks", "mark_dead", "replace_worker"):
            setattr(self, name, _method(self._recorder(name)))
        self.sessions_on = _method(self._sessions_on)

    def _recorder(self, name: str):
        async def record(*args: Any) -> int:
            await asyncio.sleep(self.hang_s)
            self.calls.append((name, *args))
            return 0

        return record

    async def _sessions_on(self, worker_id: str) -> int:
        self.calls.append(("sessions_on", worker_id))
        self.drain_calls -= 1
        return 1 if self.drain_calls >= 0 else 0


def _fleet(workers: dict[str, FakeWorker], pools: list[FakePool], lock: str = "turn") -> Fleet:
    cfg = Config()
    cfg.rollout.lock = lock
    cfg.rollout.sync_timeout_s = 1.0
    cfg.ray.call_timeout_s = 0.2
    cfg.ray.shutdown_timeout_s = 0.2
    return Fleet(cfg, "model", dict(workers), list(pools))


def _snapshot(tmp_path: Path, version: int):
    tensors = [("a.weight", torch.ones(3)), ("b.weight", torch.zeros(2, 2))]
    return write_snapshot(tmp_path / f"v{version}.bin", tensors, version)


def test_every_live_worker_loads_and_the_older_snapshot_is_freed(tmp_path):
    workers = {"a": FakeWorker("a"), "b": FakeWorker("b")}
    fleet = _fleet(workers, [FakePool()])
    first, second = _snapshot(tmp_path, 1), _snapshot(tmp_path, 2)
    asyncio.run(fleet.publish(first))
    metrics = asyncio.run(fleet.publish(second))
    assert [w.loaded for w in workers.values()] == [[1, 2], [1, 2]]
    assert fleet.version == 2 and metrics["sync/pause_s"] == pytest.approx(0.01)
    assert not Path(first.path).exists() and Path(second.path).exists()


def test_a_worker_lost_mid_update_is_marked_dead_in_every_pool(tmp_path):
    workers = {"a": FakeWorker("a"), "b": FakeWorker("b", dead=True)}
    pools = [FakePool(), FakePool()]
    fleet = _fleet(workers, pools)
    asyncio.run(fleet.publish(_snapshot(tmp_path, 1)))
    assert fleet.dead == {"b"} and list(fleet.live_workers) == ["a"]
    assert all(("mark_dead", "b") in pool.calls for pool in pools)
    assert fleet.stats() == {"fault/dead_workers": 1.0}
    workers["a"].dead = True
    with pytest.raises(NoLiveWorkers):
        asyncio.run(fleet.publish(_snapshot(tmp_path, 2)))


def test_trajectory_lock_drains_one_worker_at_a_time(tmp_path):
    pool = FakePool(drain_calls=2)
    fleet = _fleet({"a": FakeWorker("a"), "b": FakeWorker("b")}, [pool], lock="trajectory")
    asyncio.run(fleet.publish(_snapshot(tmp_path, 1)))
    order = [c for c in pool.calls if c[0] == "set_draining"]
    assert order == [
        ("set_draining", "a", True),
        ("set_draining", "a", False),
        ("set_draining", "b", True),
        ("set_draining", "b", False),
    ]
    assert [c for c in pool.calls if c[0] == "sessions_on"].count(("sessions_on", "a")) == 3


def test_a_background_publish_is_awaited_by_synced(tmp_path):
    worker = FakeWorker("a")
    fleet = _fleet({"a": worker}, [FakePool()])

    async def scenario():
        started = await fleet.publish(_snapshot(tmp_path, 1), background=True)
        return started, await fleet.synced(), await fleet.synced()

    started, synced, again = asyncio.run(scenario())
    assert started == {} and synced["sync/load_s"] > 0 and again == {}
    assert worker.loaded == [1]


def test_a_replacement_loads_the_published_version_before_it_serves(tmp_path, monkeypatch):
    replacement = FakeWorker("a")
    monkeypatch.setattr(fleet_module.actors, "rollout_worker", lambda *args: replacement)
    monkeypatch.setattr(fleet_module.actors, "kill", lambda actor: None)
    pool = FakePool()
    fleet = _fleet({"a": FakeWorker("a", dead=True)}, [pool])
    fleet.dead.add("a")
    fleet.published = _snapshot(tmp_path, 7)
    asyncio.run(fleet.replace_worker("a"))
    assert replacement.loaded == [7] and fleet.workers["a"] is replacement
    assert "a" not in fleet.dead and ("replace_worker", "a", replacement) in pool.calls


def test_pool_calls_are_bounded_by_ray_call_timeout_s(tmp_path):
    fleet = _fleet({"a": FakeWorker("a")}, [FakePool(hang_s=5.0)], lock="trajectory")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="pools"):
        asyncio.run(fleet.publish(_snapshot(tmp_path, 1)))
    assert time.monotonic() - started < 2.0  # call_timeout_s is 0.2 here


def test_shutdown_waits_at_most_ray_shutdown_timeout_s(monkeypatch, caplog):
    monkeypatch.setattr(fleet_module.actors, "kill", lambda actor: None)
    fleet = _fleet({"a": FakeWorker("a", hang_s=5.0)}, [FakePool()])
    started = time.monotonic()
    asyncio.run(fleet.shutdown())
    assert time.monotonic() - started < 2.0  # shutdown_timeout_s is 0.2 here
    assert "did not shut down cleanly" in caplog.text


def test_worker_stats_are_typed_records():
    fleet = _fleet({"a": FakeWorker("a"), "b": FakeWorker("b", dead=True)}, [FakePool()])
    fleet.dead.add("b")
    stats = asyncio.run(fleet.worker_stats())
    assert list(stats) == ["a"] and isinstance(stats["a"], EngineStats)


def test_a_worker_holding_other_weights_is_named_and_the_version_not_published(tmp_path):
    fleet = _fleet({"a": FakeWorker("a"), "b": FakeWorker("b", corrupt=1)}, [FakePool()])
    with pytest.raises(WeightMismatch, match=r"^b holds weights .* v1 .*: b\.weight$"):
        asyncio.run(fleet.publish(_snapshot(tmp_path, 1)))
    assert fleet.published is None and fleet.version == 0


def test_a_worker_reporting_another_version_is_named(tmp_path):
    fleet = _fleet({"a": FakeWorker("a", stale=True)}, [FakePool()])
    with pytest.raises(WeightMismatch, match="^a reports weights v1 after loading v2"):
        asyncio.run(fleet.publish(_snapshot(tmp_path, 2)))


def test_a_replacement_holding_other_weights_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(
        fleet_module.actors, "rollout_worker", lambda *a: FakeWorker("a", corrupt=0)
    )
    monkeypatch.setattr(fleet_module.actors, "kill", lambda actor: None)
    fleet = _fleet({"a": FakeWorker("a", dead=True)}, [FakePool()])
    fleet.published = _snapshot(tmp_path, 7)
    with pytest.raises(WeightMismatch, match=r"^a holds .*: a\.weight"):
        asyncio.run(fleet.replace_worker("a"))


def test_the_transport_its_bytes_and_seconds_and_the_digest_cost_are_logged(tmp_path):
    fleet = _fleet({"a": FakeWorker("a"), "b": FakeWorker("b")}, [FakePool()])
    snapshot = _snapshot(tmp_path, 1)
    metrics = asyncio.run(fleet.publish(snapshot))
    assert metrics["sync/transport/shm"] == 2.0
    assert metrics["sync/shm_bytes"] == 2.0 * snapshot.total_bytes
    assert metrics["sync/shm_s"] == pytest.approx(0.01)
    assert metrics["sync/digest_s"] == pytest.approx(0.002)
    assert metrics["sync/unconfirmed_tensors"] == 0.0


def _off_node_fleet(tmp_path, transport="auto"):
    """Worker `near` on the learner's node "n1", `far` on "n2"; the learner's payload
    source records what it was asked for."""
    workers = {"near": FakeWorker("near", node="n1"), "far": FakeWorker("far", node="n2")}
    fleet = _fleet(workers, [FakePool()])
    fleet.cfg.rollout.weight_transport = transport
    fleet.nodes = {"near": "n1", "far": "n2"}
    asked: list[int] = []

    def payload(snapshot):
        asked.append(snapshot.version)
        return f"ref-v{snapshot.version}"

    fleet.payload_source = payload
    return fleet, workers, asked


def _on(node: str, snapshot):
    return dataclasses.replace(snapshot, node_id=node)


def test_workers_off_the_learners_node_get_one_shared_object_store_copy(tmp_path, monkeypatch):
    fleet, workers, asked = _off_node_fleet(tmp_path)
    asyncio.run(fleet.publish(_on("n1", _snapshot(tmp_path, 1))))
    asyncio.run(fleet.publish(_on("n1", _snapshot(tmp_path, 2))))
    assert workers["near"].payloads == [None, None]  # reads the file in place
    assert workers["far"].payloads == [["ref-v1"], ["ref-v2"]]
    assert asked == [1, 2]  # one copy per version


def test_object_store_forced_sends_every_worker_the_bytes(tmp_path, monkeypatch):
    fleet, workers, asked = _off_node_fleet(tmp_path, "object_store")
    asyncio.run(fleet.publish(_on("n1", _snapshot(tmp_path, 1))))
    assert workers["near"].payloads == workers["far"].payloads == [["ref-v1"]]
    assert asked == [1]


def test_a_replacement_on_another_node_gets_the_published_versions_bytes(tmp_path, monkeypatch):
    replacement = FakeWorker("near", node="n3")  # came back on another node
    monkeypatch.setattr(fleet_module.actors, "rollout_worker", lambda *args: replacement)
    monkeypatch.setattr(fleet_module.actors, "kill", lambda actor: None)
    fleet, _, asked = _off_node_fleet(tmp_path)
    fleet.published = _on("n1", _snapshot(tmp_path, 4))
    asyncio.run(fleet.replace_worker("near"))
    assert fleet.nodes["near"] == "n3" and replacement.payloads == [["ref-v4"]]
    assert asked == [4]


def test_colocated_workers_sleep_at_the_configured_level_split_ones_never():
    workers = {"a": FakeWorker("a"), "b": FakeWorker("b"), "c": FakeWorker("c", dead=True)}
    fleet = _fleet(workers, [FakePool()], lock="none")
    assert asyncio.run(fleet.sleep()) == {} and workers["a"].slept == []  # split
    fleet.cfg.placement, fleet.cfg.rollout.sleep_level = "colocated", 2
    assert asyncio.run(fleet.sleep()) == {}  # CPU workers: nothing to free
    fleet.cfg.rollout.gpus_per_worker = fleet.cfg.learner.gpus_per_rank = 1
    metrics = asyncio.run(fleet.sleep())
    assert workers["a"].slept == workers["b"].slept == [(2, "none")]
    assert metrics == {"sync/sleep_s": 0.02, "sync/asleep": 2.0}  # the dead one left out
    fleet.cfg.rollout.sleep_level = 0
    assert asyncio.run(fleet.sleep()) == {}


def test_the_object_store_copy_is_asked_for_before_a_background_publish_returns(tmp_path):
    fleet, workers, asked = _off_node_fleet(tmp_path)

    async def scenario():
        await fleet.publish(_on("n1", _snapshot(tmp_path, 5)), background=True)
        asked_before_the_learner_steps_again = list(asked)
        await fleet.synced()
        return asked_before_the_learner_steps_again

    assert asyncio.run(scenario()) == [5] and asked == [5]
    assert workers["far"].payloads == [["ref-v5"]]
