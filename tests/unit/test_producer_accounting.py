"""The producer holds the ledger to its own records: ids it issued, groups it awaits.

Fakes stand in for the env pool actors. A fake call's handle behaves as Ray's
ObjectRef does where the producer touches it: awaiting it yields the group or
raises the actor's error (`ray/includes/object_ref.pyi:56`, `__await__`), and
cancelling our wait does not cancel the call in the actor (same file, line 61:
"the future cancellation will not cancel the corresponding task"): only
`ray.cancel(ref)` does, which on an async actor cancels the asyncio task there
(`ray/_private/worker.py:3546-3557`). `ray.cancel` is replaced by a recorder.
A dead pool raises `ray.exceptions.ActorDiedError` (`ray/exceptions.py:456`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import ray

from core.config import Config
from core.records import GroupSpec
from core.types import Group, Trajectory
from orchestrator import producer as producer_module
from orchestrator.buffer import ReplayBuffer
from orchestrator.checkpoint import ControllerState
from orchestrator.curriculum import task_sampler
from orchestrator.ledger import Ledger
from orchestrator.producer import Producer

GROUP_SIZE = 3
PER_BATCH = 2
DEADLINE_S = 0.3
PAST_DEADLINE_S = 1.0
"""Long enough after the last step for a hung group to pass DEADLINE_S and its
health ping (0.2 s) to end (the producer looks every 0.2 s)."""


class FakeRef:
    """A pending Ray call: awaitable like an ObjectRef, settled by the fake pool."""

    def __init__(self) -> None:
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()

    def __await__(self):
        return self.future.__await__()


@dataclass
class FakeMethod:
    answer: Any

    def remote(self, *args: Any) -> FakeRef:
        ref = FakeRef()
        self.answer(ref, *args)
        return ref


@dataclass
class FakePool:
    """An env pool whose n-th group call does what `faults[n]` says: ok (the group,
    as issued), hang (never answers), drop (last member missing), extra (a member
    never issued), die (the actor is gone). `stats` hangs when `deaf`."""

    faults: list[str] = field(default_factory=list)
    deaf: bool = False
    specs: list[GroupSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_group = FakeMethod(self._run_group)
        self.stats = FakeMethod(self._stats)

    def _run_group(self, ref: FakeRef, spec: GroupSpec) -> None:
        self.specs.append(spec)
        fault = self.faults.pop(0) if self.faults else "ok"
        ids = list(spec.trajectory_ids)
        if fault == "hang":
            return
        if fault == "die":
            ref.future.set_exception(ray.exceptions.ActorDiedError())
            return
        if fault == "drop":
            ids = ids[:-1]
        if fault == "extra":
            ids = [*ids, f"{spec.group_id}/{len(ids)}"]
        ref.future.set_result(_group(spec, ids))

    def _stats(self, ref: FakeRef) -> None:
        if not self.deaf:
            ref.future.set_result({"in_flight": 0})


def _group(spec: GroupSpec, ids: list[str]) -> Group:
    trajectories = []
    for index, trajectory_id in enumerate(ids):
        t = Trajectory(trajectory_id, spec.group_id, "env", spec.task_seed, prompt_length=1)
        t.append([1], generated=False)
        t.append([2], generated=True, logprobs=[-0.1], versions=[0])
        t.reward = float(index % 2)
        trajectories.append(t)
    return Group(spec.group_id, "env", spec.task_seed, trajectories)


class FakeSystem:
    def __init__(self, pools: list[FakePool]):
        self.pools = pools
        self.replaced: list[int] = []

    def replace_pool(self, index: int) -> None:
        self.replaced.append(index)
        self.pools[index] = FakePool()


def _config(mode: str = "async", steps: int = 4) -> Config:
    cfg = Config()
    cfg.env.group_size = GROUP_SIZE
    cfg.env.episode_timeout_s = 0.1
    cfg.buffer.groups_per_batch = PER_BATCH
    cfg.buffer.max_staleness = 100  # the fakes' tokens are all version 0
    cfg.trainer.mode = mode
    cfg.trainer.total_steps = steps
    cfg.supervisor.group_deadline_s = DEADLINE_S
    cfg.supervisor.health_timeout_s = 0.2
    return cfg


def _producer(
    system: FakeSystem,
    cfg: Config,
    resume: ControllerState | None = None,
    ledger: Ledger | None = None,
    in_flight_limit: int = 4,
) -> Producer:
    ledger = ledger or Ledger()
    state = SimpleNamespace(version=0, step=resume.next_step if resume else 0)
    buffer = ReplayBuffer(100, 64, lambda: state.version, on_leave=ledger.left)
    balancer = SimpleNamespace(in_flight_limit=in_flight_limit)
    tasks = task_sampler(cfg, None, resume)
    return Producer(system, buffer, cfg, state, ledger, balancer, tasks, resume)


async def _train(producer: Producer, steps: int, settle_s: float = 0.0) -> None:
    """The controller's part: take batches, count them trained, advance the version."""
    running = asyncio.create_task(producer.run())
    try:
        for _ in range(steps):
            groups = await asyncio.wait_for(_race(producer, running), 10.0)
            producer.ledger.trained(groups)
            producer.state.version += 1
            producer.state.step += 1
        await asyncio.sleep(settle_s)
        assert not running.done() or running.result()
    finally:
        producer.stop()
        running.cancel()


async def _race(producer: Producer, running: asyncio.Task) -> list[Group]:
    waiting = asyncio.ensure_future(producer.next_batch(10.0))
    await asyncio.wait({waiting, running}, return_when="FIRST_COMPLETED")
    if not waiting.done():
        waiting.cancel()
        running.result()
    return waiting.result()


@pytest.fixture
def cancelled(monkeypatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(ray, "cancel", calls.append)
    return calls


def test_ids_are_issued_by_the_producer_and_the_audit_is_clean():
    pool = FakePool()
    producer = _producer(FakeSystem([pool]), _config())
    asyncio.run(_train(producer, 3))
    first = pool.specs[0]
    assert first.trajectory_ids == tuple(f"{first.group_id}/{i}" for i in range(GROUP_SIZE))
    assert set(producer.issued) == {spec.group_id for spec in pool.specs}
    audit = producer.audit()
    assert audit.balanced and not audit.unaccounted and not audit.overdue
    stats = producer.stats()
    assert stats["ledger/unaccounted"] == 0 and stats["ledger/balanced"] == 1.0
    assert stats["ledger/issued"] == len(pool.specs) * GROUP_SIZE == len(producer.ledger.states)


def test_a_hung_group_is_declared_lost_cancelled_logged_and_run_again(cancelled, caplog):
    pool = FakePool(faults=["hang"])
    system = FakeSystem([pool])
    producer = _producer(system, _config())
    with caplog.at_level(logging.WARNING, logger="orchestrator.producer"):
        asyncio.run(_train(producer, 3, settle_s=PAST_DEADLINE_S))
    hung = pool.specs[0]
    assert producer.groups_lost == 1 and producer.stats()["fault/groups_lost"] == 1
    assert all(producer.ledger.states[t] == "lost" for t in hung.trajectory_ids)
    assert producer.ledger.counts()["lost"] == GROUP_SIZE
    assert len(cancelled) == 1  # the Ray call in the pool, not only our wait
    rerun = [s for s in pool.specs if s.task_seed == hung.task_seed and s is not hung]
    assert [s.group_id for s in rerun] == [f"{hung.group_id}.l1"]
    assert system.replaced == []  # it answered the health ping: kept
    line = next(r.getMessage() for r in caplog.records if "lost after" in r.getMessage())
    assert hung.group_id in line and "pool-0" in line and "waiting" in line
    assert producer.audit().balanced


def test_a_pool_that_fails_the_health_ping_is_replaced(cancelled):
    pool = FakePool(faults=["hang"], deaf=True)
    system = FakeSystem([pool])
    producer = _producer(system, _config())
    asyncio.run(_train(producer, 3, settle_s=PAST_DEADLINE_S))
    assert system.replaced == [0] and producer.pool_restarts == 1
    assert producer.groups_lost == 1 and producer.audit().balanced


@pytest.mark.parametrize("fault", ["drop", "extra"])
def test_a_group_with_other_members_than_issued_is_lost_and_run_again(cancelled, fault):
    pool = FakePool(faults=[fault])
    producer = _producer(FakeSystem([pool]), _config())
    asyncio.run(_train(producer, 3))
    broken = pool.specs[0]
    assert producer.groups_lost == 1 and not cancelled  # it answered: nothing to cancel
    assert all(producer.ledger.states[t] == "lost" for t in broken.trajectory_ids)
    assert any(s.group_id == f"{broken.group_id}.l1" for s in pool.specs)
    audit = producer.audit()
    assert audit.balanced and not audit.never_issued


def test_the_audit_fires_when_lost_groups_are_not_handled(cancelled, monkeypatch):
    """Turn the handling off: the hung group stays overdue, and the dropped
    member of an admitted group is orphaned in flight, both caught."""

    async def ignore_overdue(self) -> None:
        return None

    monkeypatch.setattr(Producer, "_reap_overdue", ignore_overdue)
    monkeypatch.setattr(producer_module, "_mismatch", lambda group, spec: None)
    pool = FakePool(faults=["hang", "drop"])
    producer = _producer(FakeSystem([pool]), _config())
    asyncio.run(_train(producer, 3, settle_s=PAST_DEADLINE_S))
    hung, dropped = pool.specs[0], pool.specs[1]
    audit = producer.audit()
    assert set(audit.overdue) == set(hung.trajectory_ids)
    assert audit.orphaned == (dropped.trajectory_ids[-1],)
    stats = producer.stats()
    assert stats["ledger/unaccounted"] == 1 and stats["ledger/overdue"] == GROUP_SIZE
    assert stats["ledger/balanced"] == 0.0


def test_a_dead_pool_is_replaced_and_its_group_rerun_under_the_same_ids():
    pool = FakePool(faults=["die"])
    system = FakeSystem([pool])
    producer = _producer(system, _config())
    asyncio.run(_train(producer, 2))
    died = pool.specs[0]
    assert system.replaced == [0] and producer.groups_lost == 0
    assert died.group_id in {s.group_id for s in system.pools[0].specs}
    assert producer.audit().balanced


def test_a_task_lost_too_often_stops_the_run(cancelled):
    cfg = _config()
    cfg.supervisor.max_restarts = 1
    pool = FakePool(faults=["drop", "drop"])
    producer = _producer(FakeSystem([pool]), cfg, in_flight_limit=1)  # the re-run comes next
    with pytest.raises(RuntimeError, match="lost 2 times"):
        asyncio.run(_train(producer, 2))


def test_sync_mode_starts_no_group_beyond_the_last_batch():
    steps = 3
    pool = FakePool()
    producer = _producer(FakeSystem([pool]), _config(mode="sync", steps=steps))
    asyncio.run(_train(producer, steps, settle_s=0.5))
    assert len(pool.specs) == steps * PER_BATCH
    counts = producer.ledger.counts()
    assert counts["in_flight"] == 0 and counts["buffered"] == 0
    assert counts["trained"] == len(producer.ledger.states) == steps * PER_BATCH * GROUP_SIZE


def test_a_resumed_producer_keeps_its_issued_ids_and_loss_counts(cancelled):
    """What a checkpoint keeps (controller.checkpoint writes these fields) lets
    the resumed producer's audit hold and its re-runs get fresh ids."""
    pool = FakePool(faults=["drop", "hang"])
    producer = _producer(FakeSystem([pool]), _config(steps=6))
    asyncio.run(_train(producer, 1))
    saved = ControllerState(
        next_step=1,
        version=1,
        next_seed=producer.tasks.state()["next_seed"],
        pending_seeds=producer.in_flight_seeds(),
        reruns=dict(producer.reruns),
        losses=dict(producer.losses),
        issued=dict(producer.issued),
        ledger=producer.ledger.state(),
    )
    ledger = Ledger()
    ledger.restore(saved.ledger)
    fresh = FakePool()
    resumed = _producer(FakeSystem([fresh]), _config(steps=6), saved, ledger)
    assert resumed.audit().balanced
    asyncio.run(_train(resumed, 2))
    assert resumed.audit().balanced
    assert f"{pool.specs[0].group_id}.l1" in resumed.issued


def test_idle_only_when_nothing_is_in_flight_and_the_gate_is_shut():
    """What the learner's borrowing waits for (orchestrator.assembly.Run.engines_idle)."""

    async def scenario() -> list[bool]:
        cfg = _config()
        cfg.buffer.max_staleness = 0  # the gate: one batch per version
        pool = FakePool(faults=["hang"])  # the first group keeps the engines busy
        producer = _producer(FakeSystem([pool]), cfg)
        running = asyncio.create_task(producer.run())
        seen = []
        try:
            await asyncio.sleep(0.05)
            seen.append(producer.idle())  # one group still in flight
            producer._in_flight.clear()  # it ends without a result: nothing in flight
            seen.append(producer.idle())  # the batch's groups started: gate shut
            producer.state.version += 1  # a new version opens the gate
            seen.append(producer.idle())
            await asyncio.sleep(0.3)  # the next batch's groups start and come back
            seen.append(producer.idle())
        finally:
            producer.stop()
            running.cancel()
        return seen

    assert asyncio.run(scenario()) == [False, True, False, True]


def test_groups_that_go_stale_in_line_free_their_places_in_the_gate():
    """Every group that leaves the buffer untrained frees its place in the staleness
    gate, including one that expired waiting in line (once it kept the place, and
    each such group shrank the gate for the rest of the run)."""
    cfg = _config()
    cfg.buffer.max_staleness = 1
    producer = _producer(FakeSystem([FakePool()]), cfg, in_flight_limit=100)
    producer.buffer = ReplayBuffer(1, 64, lambda: producer.state.version)
    producer.buffer.add(_stale_candidate("a"))
    producer.buffer.add(_stale_candidate("b"))
    producer.state.version = 2  # versions 1 and 2 trained other groups
    producer.started = (2 + 1 + 1) * PER_BATCH  # the gate's width at version 2: full
    assert not producer._may_start()
    assert producer.buffer.take(PER_BATCH) is None  # 'a' and 'b' are 2 behind: dropped
    assert producer.buffer.counts.dropped_stale == 2
    assert producer._may_start()


def _stale_candidate(group_id: str) -> Group:
    """A group whose tokens were all generated at version 0, admitted at version 0."""
    trajectories = []
    for index in range(GROUP_SIZE):
        t = Trajectory(f"{group_id}/{index}", group_id, "env", 0, prompt_length=1)
        t.append([1], generated=False)
        t.append([2], generated=True, logprobs=[-0.1], versions=[0])
        t.reward = float(index % 2)
        trajectories.append(t)
    return Group(group_id, "env", 0, trajectories)
