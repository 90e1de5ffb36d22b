"""Evaluation's plan and scores (core.evaluation): held-out tasks, ids, pass@k."""

from __future__ import annotations

import itertools
import random

import pytest

from core.config import Config
from core.evaluation import (
    held_out_kwargs,
    is_eval_id,
    pass_at_k,
    plan,
    summarize,
)
from core.types import Status, Trajectory


def _sample(reward: float, status: Status = Status.COMPLETED, version: int = 0) -> Trajectory:
    t = Trajectory("eval/v0/t0/0", "eval/v0/t0", "env", 0, prompt_length=2)
    t.append([1, 2], generated=False)
    t.append([3], generated=True, logprobs=[-0.1], versions=[version])
    t.reward, t.status = reward, status
    return t


@pytest.mark.parametrize("n, c", [(4, 0), (4, 1), (5, 2), (6, 6), (3, 1)])
def test_pass_at_k_is_the_chance_that_k_of_the_n_samples_hold_a_solved_one(n, c):
    """Counted over every k-subset of the n samples (the estimator's definition)."""
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        expected = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_summarize_counts_solved_samples_failures_and_pass_at_k():
    episodes = [
        [_sample(1.1), _sample(0.1)],  # one of two solved (reward >= 1)
        [_sample(0.0, Status.TRUNCATED), _sample(1.0, Status.FAILED)],  # failed: never solved
        [_sample(1.0), _sample(1.0)],
    ]
    metrics = summarize(episodes, success_reward=1.0, ks=[1, 2])
    assert metrics["eval/tasks"] == 3 and metrics["eval/samples"] == 6
    assert metrics["eval/accuracy"] == pytest.approx(3 / 6)
    assert metrics["eval/pass@1"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert metrics["eval/pass@2"] == pytest.approx((1 + 0 + 1) / 3)
    assert metrics["eval/failed"] == 1  # truncated is the model's failure, not the env's
    assert metrics["eval/mean_reward"] == pytest.approx((1.1 + 0.1 + 0 + 1 + 1 + 1) / 6)
    truncated_but_rewarded = summarize([[_sample(1.0, Status.TRUNCATED)]], 1.0, [1])
    assert truncated_but_rewarded["eval/accuracy"] == 1.0
    stricter = summarize(episodes, success_reward=1.05, ks=[1])
    assert stricter["eval/accuracy"] == pytest.approx(1 / 6)


def test_plan_takes_seeds_apart_from_training_for_a_procedural_env():
    cfg = Config()
    cfg.eval.tasks, cfg.eval.samples, cfg.eval.temperature = 5, 3, 1.0
    tasks = plan(cfg, version=7, num_tasks=None)
    assert [t.seed for t in tasks] == list(range(10**9, 10**9 + 5))
    assert tasks[0].episode_ids == (
        "eval/v7/t1000000000/0",
        "eval/v7/t1000000000/1",
        "eval/v7/t1000000000/2",
    )
    assert all(is_eval_id(i) for t in tasks for i in t.episode_ids)
    assert not is_eval_id("g1000000/0") and not is_eval_id("evaluation/0")
    assert cfg.trainer.seed * 1_000_000 + 10**6 < tasks[0].seed  # training seeds start lower
    cfg.eval.first_seed = 500
    assert [t.seed for t in plan(cfg, version=7, num_tasks=None)] == list(range(500, 505))


def test_plan_walks_a_finite_split_from_its_first_row():
    cfg = Config()
    cfg.eval.tasks = 5
    assert [t.seed for t in plan(cfg, 0, num_tasks=3)] == [0, 1, 2]
    assert [t.seed for t in plan(cfg, 0, num_tasks=50)] == [0, 1, 2, 3, 4]
    cfg.eval.tasks = 0
    assert len(plan(cfg, 0, num_tasks=50)) == 50


def test_held_out_kwargs_take_the_eval_split_of_an_env_with_splits():
    cfg = Config()
    cfg.env.kwargs = {"path": "a.jsonl", "split": "train"}

    class WithSplits:
        split = "train"

    assert held_out_kwargs(cfg, WithSplits()) == {"path": "a.jsonl", "split": "eval"}
    assert held_out_kwargs(cfg, object()) == {"path": "a.jsonl", "split": "train"}
    cfg.eval.env_kwargs = {"split": "test", "max_value": 9}
    assert held_out_kwargs(cfg, WithSplits())["split"] == "test"
    assert held_out_kwargs(cfg, object())["max_value"] == 9


def test_summarize_of_random_outcomes_matches_a_direct_count():
    rng = random.Random(3)
    episodes = [[_sample(float(rng.random() < 0.4)) for _ in range(4)] for _ in range(20)]
    solved = sum(t.reward >= 1.0 for task in episodes for t in task)
    assert summarize(episodes, 1.0, [1])["eval/accuracy"] == pytest.approx(solved / 80)
