"""bench.rollout's verify cost: a drafting step's time in plain decode steps, from
one request's decode rates and the tokens each drafting step gives."""

from __future__ import annotations

import pytest

from bench.rollout import _verify_cost


def test_free_verification_costs_one_plain_step():
    # 3 tokens per step at 3x the plain rate: each drafting step took one plain step
    assert _verify_cost(3.0, drafting_per_s=300.0, plain_per_s=100.0) == pytest.approx(1.0)


def test_no_speed_up_from_three_tokens_per_step_means_three_plain_steps_each():
    assert _verify_cost(3.0, drafting_per_s=100.0, plain_per_s=100.0) == pytest.approx(3.0)
    # the measured CPU shape: 3.23 tokens per step, 1.05x the plain rate
    assert _verify_cost(3.23, drafting_per_s=294.0, plain_per_s=280.0) == pytest.approx(3.08, 0.01)
