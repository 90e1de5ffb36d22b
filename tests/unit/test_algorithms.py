"""The GRPO family (GRPO, GSPO, DAPO, PPO), off-policy correction (TIS / MIS),
the KL penalty and loss aggregation: hand-computed cases and invariants."""

from __future__ import annotations

import math

import pytest
import torch

from core.config import AdvantageStd, AlgoConfig, AlgorithmName
from learner.algos import ALGORITHMS, PolicyInputs, make_algorithm
from learner.algos.base import aggregation_weights, group_normalized, leave_one_out


def _inputs(logp, behavior, adv, weights=None, sequence_ids=None):
    logp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    n = logp.numel()
    return PolicyInputs(
        logprobs=logp,
        behavior_logprobs=torch.tensor(behavior, dtype=torch.float64),
        advantages=torch.tensor(adv, dtype=torch.float64),
        weights=torch.tensor(weights if weights else [1.0 / n] * n, dtype=torch.float64),
        sequence_ids=None if sequence_ids is None else torch.tensor(sequence_ids),
    )


def test_config_names_every_algorithm():
    assert set(AlgorithmName) == set(ALGORITHMS)


def test_gspo_ratio_is_the_length_normalised_sequence_ratio():
    gspo = make_algorithm(AlgoConfig(name="gspo", clip_eps=10.0, clip_eps_high=10.0))  # no clip
    # sequence 0: log ratios 0.2, -0.1 (mean 0.05); sequence 1: 0.3 (mean 0.3)
    logp, behavior = [-1.0, -2.0, -0.5], [-1.2, -1.9, -0.8]
    weights = aggregation_weights([2, 1], "seq-mean-token-mean")
    inputs = _inputs(logp, behavior, [1.0, 1.0, -1.0], [weights[0]] * 2 + [weights[1]], [0, 0, 1])
    result = gspo.loss(inputs)
    s0, s1 = math.exp(0.05), math.exp(0.3)
    assert result.stats["ratio"].tolist() == pytest.approx([s0, s0, s1])
    assert result.loss.item() == pytest.approx(0.5 * (-s0) + 0.5 * s1)
    result.loss.backward()
    # d/dlogp_t of the sequence objective -A_i s_i / 2 is -A_i s_i / (2 |y_i|)
    assert inputs.logprobs.grad.tolist() == pytest.approx([-s0 / 4, -s0 / 4, s1 / 2])


def test_gspo_clips_whole_sequences_in_its_tight_range():
    gspo = make_algorithm(AlgoConfig(name="gspo"))
    assert (gspo.clip_low, gspo.clip_high) == (3e-4, 4e-4)
    inputs = _inputs([-1.0, -1.0], [-1.01, -1.01], [1.0, 1.0], sequence_ids=[0, 0])
    result = gspo.loss(inputs)  # s = e^0.01 > 1 + 4e-4 with A > 0: clipped
    assert result.stats["clipped"].tolist() == [1.0, 1.0]
    result.loss.backward()
    assert inputs.logprobs.grad.abs().sum() == 0


def test_dapo_clips_higher_above_than_below():
    dapo = make_algorithm(AlgoConfig(name="dapo"))
    assert (dapo.clip_low, dapo.clip_high) == (0.2, 0.28)
    ratios = [1.25, 1.3, 0.75]
    advantages = [1.0, 1.0, -1.0]
    inputs = _inputs([math.log(r) for r in ratios], [0.0] * 3, advantages)
    result = dapo.loss(inputs)
    assert result.stats["clipped"].tolist() == [0.0, 1.0, 1.0]
    expected = -(1.25 * 1.0 + 1.28 * 1.0 + 0.8 * -1.0) / 3
    assert result.loss.item() == pytest.approx(expected)


def test_ppo_uses_a_leave_one_out_baseline():
    assert leave_one_out([1.0, 0.0, 0.0, 1.0]) == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    assert leave_one_out([5.0]) == [0.0]
    ppo = make_algorithm(AlgoConfig(name="ppo"))
    assert ppo.advantages([3.0, 1.0]) == pytest.approx([2.0, -2.0])


def test_truncated_importance_sampling_caps_the_behavior_weight():
    tis = make_algorithm(AlgoConfig(off_policy="tis", is_cap=2.0))
    # current -0.3, behavior -1.0: weight e^0.7 = 2.01 -> 2.0; current -0.5, behavior -0.9: e^0.4
    inputs = _inputs([-0.3, -0.5], [-1.0, -0.9], [1.0, -1.0])
    result = tis.loss(inputs)
    result.loss.backward()
    # decoupled ratio against the learner's own (detached) logprobs is 1 in value
    assert result.stats["ratio"].tolist() == [1.0, 1.0]
    assert result.stats["is_weight"].tolist() == pytest.approx([2.0, math.exp(0.4)])
    assert inputs.logprobs.grad.tolist() == pytest.approx([-2.0 / 2, math.exp(0.4) / 2])


def test_masked_importance_sampling_drops_tokens_outside_the_band():
    mis = make_algorithm(AlgoConfig(off_policy="mis", is_cap=2.0))
    inputs = _inputs([-0.3, -0.5, -2.0], [-1.0, -0.9, -1.0], [1.0, 1.0, 1.0])
    result = mis.loss(inputs)
    result.loss.backward()
    assert result.stats["is_masked"].tolist() == [1.0, 0.0, 1.0]  # e^0.7 > 2, e^-1 < 1/2
    assert inputs.logprobs.grad.tolist() == pytest.approx([0.0, -math.exp(0.4) / 3, 0.0])


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("off_policy", ["behavior", "tis", "mis"])
def test_on_policy_every_variant_is_the_plain_policy_gradient(name, off_policy):
    algorithm = make_algorithm(AlgoConfig(name=name, off_policy=off_policy))
    logp, adv = [-0.3, -2.0, -0.7], [0.5, -1.0, 2.0]
    inputs = _inputs(logp, logp, adv, sequence_ids=[0, 1, 2])
    algorithm.loss(inputs).loss.backward()
    assert inputs.logprobs.grad.tolist() == pytest.approx([-a / 3 for a in adv])


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_zero_advantage_gives_zero_gradient_for_every_algorithm(name):
    algorithm = make_algorithm(AlgoConfig(name=name))
    inputs = _inputs([-0.3, -2.0], [-1.0, -0.1], [0.0, 0.0], sequence_ids=[0, 1])
    algorithm.loss(inputs).loss.backward()
    assert inputs.logprobs.grad.abs().sum() == 0


def test_aggregation_weights_hand_computed():
    assert aggregation_weights([2, 3], "token-mean") == pytest.approx([0.2, 0.2])
    assert aggregation_weights([2, 3], "seq-mean-token-mean") == pytest.approx([0.25, 1 / 6])
    assert aggregation_weights([2, 3], "seq-mean-token-sum") == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="token-mean"):
        aggregation_weights([1], "sum")


def test_kl_penalty_to_the_reference_hand_computed():
    algorithm = make_algorithm(AlgoConfig(kl_coef=0.1))
    inputs = _inputs([-0.5], [-0.5], [0.0], weights=[1.0])
    inputs.reference_logprobs = torch.tensor([-1.0], dtype=torch.float64)
    result = algorithm.loss(inputs)
    k3 = math.exp(-0.5) - 1 + 0.5
    assert result.loss.item() == pytest.approx(0.1 * k3)
    assert result.stats["kl_reference"].item() == pytest.approx(k3)
    result.loss.backward()
    assert inputs.logprobs.grad.item() == pytest.approx(0.1 * (1 - math.exp(-0.5)))
    assert "kl_reference" not in make_algorithm(AlgoConfig()).loss(inputs).stats


def test_group_advantages_hand_computed():
    # rewards 1, 0, 0, 1: mean 0.5, sample std sqrt(1/3) (the default), population std 0.5
    sample = 0.5 / math.sqrt(1 / 3)
    assert group_normalized([1, 0, 0, 1], True) == pytest.approx(
        [sample, -sample, -sample, sample], abs=1e-5
    )
    population = group_normalized([1, 0, 0, 1], True, AdvantageStd.population)
    assert population == pytest.approx([1, -1, -1, 1], abs=1e-5)
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
