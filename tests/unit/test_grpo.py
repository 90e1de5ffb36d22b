"""GRPO: advantages and the clipped loss on hand-computed cases, plus its invariants."""

from __future__ import annotations

import math

import pytest
import torch

from core.config import AlgoConfig
from learner.algos import ALGORITHMS, PolicyInputs, make_algorithm
from learner.algos.base import group_normalized


def _inputs(logp, behavior, adv, weights=None):
    logp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    n = logp.numel()
    return PolicyInputs(
        logprobs=logp,
        behavior_logprobs=torch.tensor(behavior, dtype=torch.float64),
        advantages=torch.tensor(adv, dtype=torch.float64),
        weights=torch.tensor(weights if weights else [1.0 / n] * n, dtype=torch.float64),
    )


def test_group_advantages_hand_computed():
    # rewards 1, 0, 0, 1: mean 0.5, population std 0.5
    assert group_normalized([1, 0, 0, 1], True) == pytest.approx([1, -1, -1, 1], abs=1e-5)
    assert group_normalized([1, 0, 0, 1], False) == pytest.approx([0.5, -0.5, -0.5, 0.5])
    assert group_normalized([3, 3, 3], True) == [0.0, 0.0, 0.0]


def test_loss_hand_computed_with_clipping():
    grpo = make_algorithm(AlgoConfig(clip_eps=0.2))
    # token 1: ratio e^0.5=1.6487, A=+1 -> clipped at 1.2; token 2: ratio e^-0.1, A=-2
    inputs = _inputs([0.0, -1.1], [-0.5, -1.0], [1.0, -2.0])
    result = grpo.loss(inputs)
    r2 = math.exp(-0.1)
    expected = 0.5 * (-1.2) + 0.5 * (-(r2 * -2.0))
    assert result.loss.item() == pytest.approx(expected, rel=1e-9)
    assert result.stats["clipped"].tolist() == [1.0, 0.0]
    result.loss.backward()
    # the clipped token gives no gradient; the other gives -w * A * ratio
    assert inputs.logprobs.grad.tolist() == pytest.approx([0.0, -0.5 * -2.0 * r2])


def test_on_policy_gradient_is_the_plain_policy_gradient():
    grpo = make_algorithm(AlgoConfig())
    logp = [-0.3, -2.0, -0.7]
    adv = [0.5, -1.0, 2.0]
    inputs = _inputs(logp, logp, adv)
    grpo.loss(inputs).loss.backward()
    assert inputs.logprobs.grad.tolist() == pytest.approx([-a / 3 for a in adv])


def test_zero_advantage_gives_zero_gradient():
    grpo = make_algorithm(AlgoConfig())
    inputs = _inputs([-0.3, -2.0], [-1.0, -0.1], [0.0, 0.0])
    grpo.loss(inputs).loss.backward()
    assert inputs.logprobs.grad.abs().sum() == 0


def test_kl_estimate_is_zero_on_policy_and_positive_off():
    grpo = make_algorithm(AlgoConfig())
    assert grpo.loss(_inputs([-1.0], [-1.0], [1.0])).stats["kl_behavior"].item() == 0
    assert grpo.loss(_inputs([-1.0], [-1.5], [1.0])).stats["kl_behavior"].item() > 0


def test_unknown_algorithm_names_the_choices():
    assert "grpo" in ALGORITHMS
    with pytest.raises(ValueError, match="grpo"):
        make_algorithm(AlgoConfig(name="nope"))
