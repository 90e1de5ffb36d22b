"""The pure parts of the chaos driver: the kill schedule and the verdict."""

from __future__ import annotations

import pytest

from bench.chaos.driver import Kill
from bench.chaos.schedule import ChaosConfig, plan
from bench.chaos.verdict import Accounts, accounts, verdict
from core.config import ConfigError
from orchestrator.ledger import audit


def test_schedule_is_a_function_of_the_seed():
    assert plan(ChaosConfig(seed=7)) == plan(ChaosConfig(seed=7))
    assert plan(ChaosConfig(seed=7)) != plan(ChaosConfig(seed=8))


@pytest.mark.parametrize("seed", range(20))
def test_schedule_respects_count_intervals_and_targets(seed):
    cfg = ChaosConfig(seed=seed, kills=12, min_interval_s=2.0, max_interval_s=9.0)
    kills = plan(cfg)
    assert len(kills) == 12
    assert all(2.0 <= k.delay_s <= 9.0 for k in kills)
    assert {k.target for k in kills} == {"rollout", "pool", "learner"}  # each at least once


def test_schedule_only_hits_the_chosen_targets():
    kills = plan(ChaosConfig(seed=3, kills=10, targets=("pool",)))
    assert {k.target for k in kills} == {"pool"}
    assert len(plan(ChaosConfig(kills=2))) == 2  # fewer kills than targets: no padding


@pytest.mark.parametrize(
    "bad",
    [
        ChaosConfig(targets=("gpu",)),
        ChaosConfig(targets=()),
        ChaosConfig(min_interval_s=5.0, max_interval_s=1.0),
    ],
)
def test_schedule_refuses_bad_options(bad):
    with pytest.raises(ConfigError):
        plan(bad)


def _ledger(states, times=None):
    return {"states": states, "times_trained": times or {}}


def test_accounts_use_the_producers_audit_and_find_over_reuse():
    states = {
        "g1/0": "trained",
        "g1/1": "trained",
        "g2/0": "in_flight",  # its group still runs: fine
        "g3.r1/0": "in_flight",  # re-run of g3, queued: fine
        "g4/0": "in_flight",  # nobody will ever bring it back: unaccounted
        "g5/0": "failed",
        "g6/0": "lost",  # declared lost, its task run again: accounted
    }
    issued = {t.split("/")[0]: () for t in states}
    for t in states:
        issued[t.split("/")[0]] += (t,)
    live = {"g2", "g3.r1"}
    books = accounts(
        _ledger(states, {"g1/0": 1, "g1/1": 2}), audit(states, issued, live), replay_ratio=1
    )
    assert books.unaccounted == ["g4/0"] and books.overdue == []
    assert books.over_reused == ["g1/1"]
    assert books.trained == 2 and books.trained_more_than_once == 1
    assert books.produced == 7 and books.counts["in_flight"] == 3 and books.counts["lost"] == 1
    assert not books.balanced
    fine = audit(states, issued, live | {"g4"})
    assert accounts(_ledger(states, {"g1/1": 2}), fine, replay_ratio=2).balanced
    late = audit(states, issued, live | {"g4"}, overdue_groups={"g2"})
    assert accounts(_ledger(states), late, replay_ratio=1).overdue == ["g2/0"]


def _books(unaccounted=(), over=(), overdue=()):
    return Accounts({"trained": 4}, 4, 4, list(unaccounted), list(overdue), list(over), len(over))


def _kill(timed_out=False):
    return Kill(1.0, "pool-0", "pool", 3, None if timed_out else 2.0, "x", timed_out)


def test_verdict_passes_a_clean_run():
    assert verdict(_books(), [_kill()] * 3, 3, steps_done=10, total_steps=10) == []


@pytest.mark.parametrize(
    ("books", "kills", "steps", "error", "expected"),
    [
        (_books(unaccounted=["g4/0"]), 3, 10, None, "unaccounted"),
        (_books(overdue=["g2/0"]), 3, 10, None, "overdue"),
        (_books(over=["g1/1"]), 3, 10, None, "beyond the reuse limit"),
        (_books(), 3, 7, None, "7 of 10 steps"),
        (_books(), 2, 10, None, "only 2 of 3 kills"),
        (None, 3, 0, "RuntimeError: boom", "the run failed"),
    ],
)
def test_verdict_flags_each_problem(books, kills, steps, error, expected):
    problems = verdict(books, [_kill()] * kills, 3, steps, 10, error)
    assert any(expected in p for p in problems), problems


def test_verdict_flags_an_unrecovered_kill():
    problems = verdict(_books(), [_kill(), _kill(), _kill(timed_out=True)], 3, 10, 10)
    assert problems == ["pool-0 (killed at 1s) did not recover"]
