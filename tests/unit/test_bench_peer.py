"""bench.peer's pure parts: the task's scoring is the env's own reward for one reply,
and the report's reward at equal loop time and ratios (no TRL, no run)."""

from __future__ import annotations

import pytest

from bench.peer import CASES, _report, _reward_at, accounting
from bench.peer_tasks import correct, score
from envs import make_env

ENV = {"id": "asyncrl/Calculator-v0", "kwargs": {"max_turns": 1}}


def _answer(seed: int) -> str:
    _, info = make_env(ENV["id"], ENV["kwargs"]).reset(seed=seed)
    return info["task"]["answer"]


def test_a_right_answer_scores_the_envs_reward_and_counts_as_correct():
    reply = f"<answer>{_answer(3)}</answer>"
    assert score(ENV, 3, reply) == pytest.approx(1.1)  # correct 1.0 + format 0.1
    assert correct(ENV, 3, reply)


def test_a_wrong_answer_or_a_tool_call_is_not_correct():
    assert not correct(ENV, 3, "<answer>-1</answer>")
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
    assert not correct(ENV, 3, call) and score(ENV, 3, call) < 1.0


def test_reward_at_a_time_averages_the_last_steps_done_by_then():
    steps = [{"loop_s": float(t), "reward": float(t)} for t in range(1, 11)]
    assert _reward_at(steps, 7.5) == pytest.approx((3 + 4 + 5 + 6 + 7) / 5)
    assert _reward_at(steps, 0.5) is None


def test_the_report_compares_every_side_with_trl_at_the_shortest_loop():
    case = CASES["tiny"]

    def side(loop_s: float, process_s: float) -> dict:
        steps = [
            {"loop_s": loop_s * (i + 1) / case.steps, "reward": 0.5} for i in range(case.steps)
        ]
        return {
            "loop_s": loop_s,
            "process_s": process_s,
            "startup_s": 1.0,
            "shutdown_s": 1.0,
            "steps": steps,
        }

    sides = {"trl": side(60.0, 70.0), "asyncrl_async": side(40.0, 70.0)}
    accuracy = {"start": 0.1, "trl": 0.5, "asyncrl_async": 0.6}
    report = _report(case, sides, accuracy)
    assert report["equal_loop_time_s"] == 40.0
    assert report["ratios"]["asyncrl_async/trl samples/s"] == pytest.approx(1.5)
    assert report["ratios"]["asyncrl_async/trl process time"] == pytest.approx(1.0)
    assert report["sides"]["trl"]["reward_at_equal_time"] == pytest.approx(0.5)


def test_accounting_averages_the_steps_after_the_first_and_skips_what_was_not_logged():
    history = [
        {"perf/step_s": 9.0, "perf/cpu_s/learner": 9.0},
        {"perf/step_s": 2.0, "perf/cpu_s/learner": 1.0},
        {"eval/accuracy": 0.5},  # an evaluation's row, not a step
        {"perf/step_s": 4.0, "perf/cpu_s/learner": 2.0, "perf/learner_borrowed_s": 1.0},
    ]
    means = accounting(history)
    assert means["perf/step_s"] == 3.0 and means["perf/cpu_s/learner"] == 1.5
    assert means["perf/learner_borrowed_s"] == 1.0  # one step logged it
    assert "perf/cpu_s/env" not in means
    assert accounting(history[:1]) == {"perf/step_s": 9.0, "perf/cpu_s/learner": 9.0}
