"""The ledger: every trajectory exactly once, transitions enforced, and its audit
against records it does not keep (ids issued, groups awaited), including under a
real ReplayBuffer and concurrent asyncio producers."""

from __future__ import annotations

import asyncio
import random

import pytest

from core.types import Group, Status, Trajectory
from orchestrator.buffer import ReplayBuffer
from orchestrator.ledger import Ledger, LedgerError, audit


def _group(gid: str, size: int, version: int = 0, rewards=None, failed=()) -> Group:
    trajs = []
    for i in range(size):
        t = Trajectory(f"{gid}/{i}", gid, "env", 0, prompt_length=1)
        t.append([1], generated=False)
        t.append([2], generated=True, logprobs=[-0.1], versions=[version])
        t.reward = rewards[i] if rewards else float(i % 2)
        if i in failed:
            t.status, t.failure = Status.FAILED, "tool crashed"
        trajs.append(t)
    return Group(gid, "env", 0, trajs)


def _ids(gid: str, size: int) -> tuple[str, ...]:
    return tuple(f"{gid}/{i}" for i in range(size))


def test_a_trajectory_is_counted_once():
    ledger = Ledger()
    ledger.started(_ids("g", 2))
    group = _group("g", 2, failed=(1,))
    ledger.arrived(group)
    ledger.buffered(group)
    ledger.trained([group])
    assert ledger.counts()["trained"] == 1 and ledger.counts()["failed"] == 1
    assert ledger.failures == {"tool crashed": 1}
    with pytest.raises(LedgerError, match="more than"):
        ledger.trained([group])  # replay_ratio 1
    with pytest.raises(LedgerError, match="cannot go"):
        ledger.buffered(_group("never-started", 1))


def test_in_flight_groups_rerun_after_resume():
    ledger = Ledger()
    ledger.started(_ids("g", 2))
    restored = Ledger()
    restored.restore(ledger.state())
    restored.started(_ids("g", 2))  # re-run of a group in flight at the checkpoint
    assert restored.counts()["in_flight"] == 2


def test_a_lost_group_is_terminal():
    ledger = Ledger()
    ledger.started(_ids("g", 2))
    ledger.lost(_ids("g", 2))
    assert ledger.counts()["lost"] == 2 and ledger.stats()["ledger/lost"] == 2
    for again in (ledger.started, ledger.lost):
        with pytest.raises(LedgerError, match="cannot go from lost"):
            again(_ids("g", 1))
    with pytest.raises(LedgerError, match="cannot go"):
        ledger.lost(["never-started/0"])


def test_audit_finds_what_the_ledger_alone_cannot():
    """The ledger's own states always add up; the audit holds them to the ids
    issued and the groups still awaited."""
    states = {
        "g1/0": "trained",
        "g1/1": "failed",
        "g2/0": "in_flight",  # awaited: fine
        "g3/0": "in_flight",  # queued to run again: fine
        "g4/0": "in_flight",  # nobody will bring it back: orphaned
        "g5/0": "buffered",  # never issued
        "g6/0": "lost",
    }
    issued = {g: (f"{g}/0",) for g in ("g1", "g2", "g3", "g4", "g6", "g7")}
    issued["g1"] = ("g1/0", "g1/1")
    books = audit(states, issued, live_groups={"g2", "g3", "g7"}, overdue_groups={"g2"})
    assert books.never_recorded == ("g7/0",)
    assert books.never_issued == ("g5/0",)
    assert books.orphaned == ("g4/0",)
    assert books.overdue == ("g2/0",)
    assert set(books.unaccounted) == {"g7/0", "g5/0", "g4/0"}
    assert books.stats() == {
        "ledger/unaccounted": 3.0,
        "ledger/overdue": 1.0,
        "ledger/balanced": 0.0,
    }
    clean = {t: s for t, s in states.items() if t not in ("g4/0", "g5/0")} | {"g7/0": "in_flight"}
    issued.pop("g4")
    assert audit(clean, issued, {"g2", "g3", "g7"}).balanced


def test_balance_holds_under_concurrent_producers_and_a_real_buffer():
    """Many groups arrive concurrently (asyncio tasks finishing in random order);
    stale drops, filtering, evictions, replays and failures all happen; every
    produced trajectory is in exactly one state and none trained too often."""
    rng = random.Random(0)
    version = {"v": 0}
    ledger = Ledger(replay_ratio=2)
    buffer = ReplayBuffer(
        max_staleness=1,
        capacity_groups=6,
        version=lambda: version["v"],
        replay_ratio=2,
        drop_zero_variance=True,
        on_leave=ledger.left,
    )

    issued: dict[str, tuple[str, ...]] = {}
    awaited: set[str] = set()

    async def produce(index: int) -> None:
        gid = f"g{index}"
        issued[gid] = _ids(gid, 4)
        awaited.add(gid)
        ledger.started(issued[gid])
        born = version["v"] - rng.choice([0, 0, 0, 2])
        await asyncio.sleep(rng.random() * 0.01)
        rewards = [1.0] * 4 if rng.random() < 0.2 else [float(i % 2) for i in range(4)]
        failed = (rng.randrange(4),) if rng.random() < 0.2 else ()
        group = _group(gid, 4, max(0, born), rewards, failed)
        awaited.discard(gid)
        ledger.arrived(group)
        if buffer.add(group):
            ledger.buffered(group)

    async def learn() -> None:
        for _ in range(40):
            await asyncio.sleep(0.002)
            served = buffer.take(2)
            if served:
                ledger.trained(served)
                version["v"] += 1

    async def main() -> None:
        await asyncio.gather(learn(), *[produce(i) for i in range(120)])

    asyncio.run(main())
    counts = ledger.counts()
    assert sum(counts.values()) == len(ledger.states) == 120 * 4
    assert audit(ledger.states, issued, awaited).balanced
    assert max(ledger.times_trained.values()) <= 2
    assert all(counts[s] > 0 for s in ("trained", "failed", "filtered", "dropped_stale"))
