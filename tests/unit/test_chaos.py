"""The pure parts of the chaos driver: the kill schedule and the verdict."""

from __future__ import annotations

import pytest

from core.config import ConfigError
from orchestrator.chaos import Accounts, ChaosConfig, Kill, accounts, plan, verdict


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


def test_accounts_find_lost_and_over_reused_trajectories():
    states = {
        "g1/0": "trained",
        "g1/1": "trained",
        "g2/0": "in_flight",  # its group still runs: fine
        "g3.r1/0": "in_flight",  # re-run of g3, queued: fine
        "g4/0": "in_flight",  # nobody will ever bring it back: lost
        "g5/0": "failed",
    }
    books = accounts(_ledger(states, {"g1/0": 1, "g1/1": 2}), [2, 3], replay_ratio=1)
    assert books.lost == ["g4/0"]
    assert books.over_reused == ["g1/1"]
    assert books.trained == 2 and books.trained_more_than_once == 1
    assert books.produced == 6 and books.counts["in_flight"] == 3
    assert not books.balanced
    assert accounts(_ledger(states, {"g1/1": 2}), [2, 3, 4], replay_ratio=2).balanced


def _books(lost=(), over=()):
    return Accounts({"trained": 4}, 4, 4, list(lost), list(over), len(over))


def _kill(timed_out=False):
    return Kill(1.0, "pool-0", "pool", 3, None if timed_out else 2.0, "x", timed_out)


def test_verdict_passes_a_clean_run():
    assert verdict(_books(), [_kill()] * 3, 3, steps_done=10, total_steps=10) == []


@pytest.mark.parametrize(
    ("books", "kills", "steps", "error", "expected"),
    [
        (_books(lost=["g4/0"]), 3, 10, None, "lost"),
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
