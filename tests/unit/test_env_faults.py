"""Environment faults: group re-run decisions, the env circuit breaker, the ledger."""

from __future__ import annotations

import pytest

from core.types import Group, Status, Trajectory
from orchestrator.env_faults import EnvBreaker, EnvCircuitOpen, needs_rerun
from orchestrator.ledger import Ledger, audit


def _group(statuses, env_id="asyncrl/Code-v0", group_id="g1") -> Group:
    trajectories = []
    for index, status in enumerate(statuses):
        t = Trajectory(f"{group_id}/{index}", group_id, env_id, 1, 0)
        t.status = status
        t.failure = "tool python timed out" if status == Status.FAILED else None
        trajectories.append(t)
    return Group(group_id, env_id, 1, trajectories)


def test_only_failures_that_are_not_the_models_fault_call_for_a_rerun():
    assert not needs_rerun(_group([Status.COMPLETED, Status.TRUNCATED]))
    assert needs_rerun(_group([Status.COMPLETED, Status.FAILED]))
    assert needs_rerun(_group([Status.ABORTED, Status.COMPLETED]))


def test_breaker_opens_above_the_failure_rate_with_one_clear_line():
    breaker = EnvBreaker(window=8, max_failure_rate=0.5)
    breaker.record(_group([Status.COMPLETED] * 4))  # window not full yet
    breaker.record(_group([Status.FAILED] * 4))  # 4 of the last 8: at the rate, not above
    with pytest.raises(EnvCircuitOpen) as err:
        breaker.record(_group([Status.FAILED]))
    message = str(err.value)
    assert "asyncrl/Code-v0 failed 5 of its last 8" in message
    assert "tool python timed out" in message and "\n" not in message


def test_breaker_counts_envs_apart_and_forgets_old_failures():
    breaker = EnvBreaker(window=4, max_failure_rate=0.5)
    breaker.record(_group([Status.FAILED] * 2, env_id="a"))
    breaker.record(_group([Status.COMPLETED] * 4, env_id="b"))
    breaker.record(_group([Status.COMPLETED] * 4, env_id="a"))  # the failures slid out
    assert breaker.failure_rate("a") == 0.0 and breaker.stats()["fault/env_failures"] == 2


def test_ledger_accounts_a_rerun_group_and_its_replacement():
    ledger = Ledger()
    ledger.started(["g1/0", "g1/1", "g1/2"])
    first = _group([Status.COMPLETED, Status.FAILED, Status.COMPLETED])
    ledger.arrived(first)
    ledger.rerun(first)
    ledger.started(["g1.r1/0", "g1.r1/1", "g1.r1/2"])
    second = _group([Status.COMPLETED] * 3, group_id="g1.r1")
    ledger.arrived(second)
    ledger.buffered(second)
    ledger.trained([second])
    counts = ledger.counts()
    assert counts["rerun"] == 2 and counts["failed"] == 1 and counts["trained"] == 3
    issued = {g: tuple(f"{g}/{i}" for i in range(3)) for g in ("g1", "g1.r1")}
    assert audit(ledger.states, issued, live_groups=()).balanced
