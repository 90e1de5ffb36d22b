"""The ledger: every trajectory exactly once, transitions enforced, balance holds,
including under a real ReplayBuffer and concurrent asyncio producers."""

from __future__ import annotations

import asyncio
import random

import pytest

from core.types import Group, Status, Trajectory
from orchestrator.buffer import ReplayBuffer
from orchestrator.ledger import Ledger, LedgerError


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


def test_a_trajectory_is_counted_once():
    ledger = Ledger()
    ledger.started("g", 2)
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
    ledger.started("g", 2)
    restored = Ledger()
    restored.restore(ledger.state())
    restored.started("g", 2)  # re-run of a group in flight at the checkpoint
    assert restored.counts()["in_flight"] == 2


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

    async def produce(index: int) -> None:
        gid = f"g{index}"
        ledger.started(gid, 4)
        born = version["v"] - rng.choice([0, 0, 0, 2])
        await asyncio.sleep(rng.random() * 0.01)
        rewards = [1.0] * 4 if rng.random() < 0.2 else [float(i % 2) for i in range(4)]
        failed = (rng.randrange(4),) if rng.random() < 0.2 else ()
        group = _group(gid, 4, max(0, born), rewards, failed)
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
    assert ledger.stats()["ledger/balanced"] == 1.0
    assert max(ledger.times_trained.values()) <= 2
    assert all(counts[s] > 0 for s in ("trained", "failed", "filtered", "dropped_stale"))
