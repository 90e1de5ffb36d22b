"""Every loss knob moves the gradient it names: entropy bonus, dual-clip, the log-ratio
clamp, independent lower/upper clips, the advantage std, MIS denominators, DAPO's
overlong shaping and dynamic sampling, and the top_p refusal."""

from __future__ import annotations

import math

import pytest
import torch

from core.compose import compose
from core.config import AlgoConfig, Config, ConfigError, validate
from core.types import Batch, Group, Trajectory, Turn
from learner.algos import PolicyInputs, make_algorithm
from learner.algos.base import OverlongShaping, kept_token_weights
from learner.batching import collect_samples
from learner.trainer import token_logprobs
from tests.unit.test_algorithms import _inputs


def _grad(algo: AlgoConfig, *args, **kwargs) -> tuple[float, list[float]]:
    inputs = _inputs(*args, **kwargs)
    result = make_algorithm(algo).loss(inputs)
    result.loss.backward()
    return result.loss.item(), inputs.logprobs.grad.tolist()


# -- entropy bonus --------------------------------------------------------------------


def test_entropy_bonus_reaches_the_logits():
    logits = torch.randn(2, 5, 11, requires_grad=True)
    targets = torch.randint(0, 11, (2, 5))
    logprobs, entropy = token_logprobs(logits, targets, 1.0, entropy_grad=True)
    algo = make_algorithm(AlgoConfig(entropy_coef=0.5))
    zero_adv = PolicyInputs(
        logprobs=logprobs.flatten(),
        behavior_logprobs=logprobs.detach().flatten(),
        advantages=torch.zeros(10),
        weights=torch.full((10,), 0.1),
        entropy=entropy.flatten(),
    )
    algo.loss(zero_adv).loss.backward()
    # zero advantages: the whole gradient is the entropy bonus's, and it raises entropy
    assert logits.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
        _, after = token_logprobs(stepped, targets, 1.0, entropy_grad=False)
    assert after.mean() > entropy.mean()


def test_without_entropy_bonus_entropy_has_no_graph():
    logits = torch.randn(1, 3, 7, requires_grad=True)
    _, entropy = token_logprobs(logits, torch.zeros(1, 3, dtype=torch.long), 1.0, False)
    assert entropy.grad_fn is None and not entropy.requires_grad


# -- dual-clip and the log-ratio clamp --------------------------------------------------


def test_dual_clip_caps_the_loss_of_a_negative_advantage_token():
    # ratio e^3 = 20 with A = -1: plain PPO loses 20 and pushes with gradient 20
    capped_loss, capped_grad = _grad(AlgoConfig(), [0.0], [-3.0], [-1.0])
    assert capped_loss == pytest.approx(3.0) and capped_grad == [0.0]
    loss, grad = _grad(AlgoConfig(clip_ratio_c=None), [0.0], [-3.0], [-1.0])
    assert loss == pytest.approx(math.exp(3)) and grad[0] == pytest.approx(math.exp(3))
    # below the cap, and for positive advantages, dual-clip changes nothing
    assert _grad(AlgoConfig(), [0.0], [-0.5], [-1.0]) == _grad(
        AlgoConfig(clip_ratio_c=None), [0.0], [-0.5], [-1.0]
    )
    assert _grad(AlgoConfig(clip_ratio_c=1.5), [0.0], [-3.0], [-1.0])[0] == pytest.approx(1.5)


def test_dual_clip_fraction_is_reported():
    inputs = _inputs([0.0, 0.0], [-3.0, 0.0], [-1.0, -1.0])
    stats = make_algorithm(AlgoConfig()).loss(inputs).stats
    assert stats["dual_clipped"].tolist() == [1.0, 0.0]


def test_log_ratio_is_clamped_before_exp():
    # a wildly mismatched token: log ratio 50 would overflow to e^50
    inputs = _inputs([0.0], [-50.0], [1.0])
    ratio = make_algorithm(AlgoConfig(clip_eps_high=1e9)).loss(inputs).stats["ratio"]
    assert ratio.item() == pytest.approx(math.exp(20.0))
    loss, grad = _grad(AlgoConfig(log_ratio_clamp=1.0, clip_eps_high=1e9), [0.0], [-50.0], [1.0])
    assert loss == pytest.approx(-math.e) and grad == [0.0]  # no gradient past the clamp
    _, inside = _grad(AlgoConfig(log_ratio_clamp=1.0, clip_eps_high=1e9), [0.0], [-0.5], [1.0])
    assert inside[0] == pytest.approx(-math.exp(0.5))


# -- clip bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algo", "expected"),
    [
        (AlgoConfig(name="dapo"), (0.2, 0.28)),
        (AlgoConfig(name="dapo", clip_eps=0.1), (0.1, 0.28)),
        (AlgoConfig(name="dapo", clip_eps_high=0.4), (0.2, 0.4)),
        (AlgoConfig(name="grpo", clip_eps=0.1), (0.1, 0.2)),
        (AlgoConfig(name="gspo", clip_eps_high=1e-3), (3e-4, 1e-3)),
    ],
)
def test_clip_bounds_are_set_independently(algo, expected):
    made = make_algorithm(algo)
    assert (made.clip_low, made.clip_high) == pytest.approx(expected)


def test_upper_clip_moves_the_gradient():
    # ratio e^0.22 = 1.246, A > 0: inside DAPO's 1.28, outside 1.2
    _, inside = _grad(AlgoConfig(name="dapo"), [0.0], [-0.22], [1.0])
    _, outside = _grad(AlgoConfig(name="dapo", clip_eps_high=0.2), [0.0], [-0.22], [1.0])
    assert inside[0] == pytest.approx(-math.exp(0.22)) and outside == [0.0]
    # the lower clip alone leaves the upper one where it was
    _, lowered = _grad(AlgoConfig(name="dapo", clip_eps=0.05), [0.0], [-0.22], [1.0])
    assert lowered == inside


# -- advantages --------------------------------------------------------------------------


def test_adv_std_scales_advantages_by_the_bessel_factor():
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    sample = make_algorithm(AlgoConfig()).advantages(rewards)
    population = make_algorithm(AlgoConfig(adv_std="population")).advantages(rewards)
    n = len(rewards)
    for s, p in zip(sample, population, strict=True):
        assert p == pytest.approx(s * math.sqrt(n / (n - 1)), rel=1e-5)


# -- MIS denominators ----------------------------------------------------------------------


def test_mis_masked_tokens_leave_the_token_mean_denominator():
    # token 2's weight e^2 is outside [1/2, 2]: masked. The learner counts kept tokens
    # beforehand: 3 of 4, so kept_scale = 4/3 and the loss is the mean over 3 tokens.
    inputs = _inputs([-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -3.0, -1.0], [1.0, 2.0, 5.0, 3.0])
    inputs.kept_scale = 4 / 3
    result = make_algorithm(AlgoConfig(off_policy="mis")).loss(inputs)
    assert result.loss.item() == pytest.approx(-(1.0 + 2.0 + 3.0) / 3)
    result.loss.backward()
    assert inputs.logprobs.grad.tolist() == pytest.approx([-1 / 3, -2 / 3, 0.0, -1.0])


def test_mis_masked_tokens_leave_their_sequence_denominator():
    # two sequences of 2 tokens, seq-mean-token-mean weights 1/4 each; sequence 0 loses
    # a token, so its remaining token carries its sequence's whole half
    inputs = _inputs(
        [-1.0, -1.0, -1.0, -1.0],
        [-3.0, -1.0, -1.0, -1.0],
        [7.0, 2.0, 1.0, 1.0],
        weights=[0.25] * 4,
        sequence_ids=[0, 0, 1, 1],
    )
    algo = make_algorithm(AlgoConfig(off_policy="mis", loss_agg="seq-mean-token-mean"))
    assert algo.loss(inputs).loss.item() == pytest.approx(-(0.5 * 2.0 + 0.5 * 1.0))


def test_kept_token_weights_leave_token_sum_as_it_is():
    weights = torch.tensor([0.5, 0.5, 0.5])
    kept = torch.tensor([True, False, True])
    out = kept_token_weights(weights, kept, None, "seq-mean-token-sum")
    assert out.tolist() == [0.5, 0.0, 0.5]


# -- DAPO: overlong shaping and dynamic sampling -------------------------------------------


def test_overlong_penalty_hand_computed():
    shaping = OverlongShaping(buffer=4, max_penalty=1.0, max_tokens=10)
    assert [shaping.penalty_for(n) for n in (5, 6, 7, 8, 10, 12)] == pytest.approx(
        [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    )
    assert OverlongShaping(buffer=0, max_tokens=10).penalty_for(10) == 0.0


def _turned(i: int, turn_lengths: list[int], reward: float) -> Trajectory:
    t = Trajectory(f"t{i}", "g", "e", 0, 2)
    t.append([1, 2], generated=False)
    for length in turn_lengths:
        t.turns.append(Turn(len(t.tokens), length, 0, "w", "stop", 0.0))
        t.append([5] * length, True, [-1.0] * length, [0] * length)
    t.reward = reward
    return t


def test_overlong_penalty_scales_the_reward_lost_at_the_limit():
    at_limit = _turned(0, [10], 1.0)
    full = AlgoConfig(name="dapo", overlong_buffer=4, overlong_max_tokens=10)
    half = AlgoConfig(name="dapo", overlong_buffer=4, overlong_max_tokens=10, overlong_penalty=0.5)
    assert make_algorithm(full).shaped_reward(at_limit) == pytest.approx(0.0)
    assert make_algorithm(half).shaped_reward(at_limit) == pytest.approx(0.5)


def test_overlong_shaping_moves_the_advantages_of_long_turns():
    group = Group("g", "e", 0, [_turned(0, [3], 1.0), _turned(1, [10], 1.0)])
    plain = collect_samples(Batch([group], 0), make_algorithm(AlgoConfig()))
    assert [s.advantage for s in plain] == [0.0, 0.0]
    shaped_cfg = AlgoConfig(name="dapo", overlong_buffer=4, overlong_max_tokens=10)
    shaped = collect_samples(Batch([group], 0), make_algorithm(shaped_cfg))
    assert shaped[0].advantage > 0 > shaped[1].advantage
    # the longest turn counts, not the sum: three short turns are not overlong
    algo = make_algorithm(shaped_cfg)
    assert algo.shaped_reward(_turned(2, [4, 4, 4], 1.0)) == 1.0
    assert algo.shaped_reward(_turned(3, [4, 8], 1.0)) == pytest.approx(0.5)


def test_algo_dapo_is_the_whole_recipe():
    cfg = compose(["algo=dapo"])
    algo = make_algorithm(cfg.algo)
    assert (algo.clip_low, algo.clip_high, algo.loss_agg) == (0.2, 0.28, "token-mean")
    assert cfg.buffer.drop_zero_variance is True
    assert cfg.algo.overlong_buffer > 0
    # a user override of one clip bound leaves the other
    assert make_algorithm(compose(["algo=dapo", "algo.clip_eps=0.1"]).algo).clip_high == 0.28
    assert compose(["algo=grpo"]).buffer.drop_zero_variance is False


def test_overlong_limit_defaults_to_the_turn_limit():
    from core.config import learner_algo

    cfg = compose(["algo=dapo", "rollout.max_tokens_per_turn=40"])
    assert learner_algo(cfg).overlong_max_tokens == 40
    cfg.algo.overlong_max_tokens = 30
    assert learner_algo(cfg).overlong_max_tokens == 30


# -- refusals ------------------------------------------------------------------------------


def test_top_p_below_one_is_refused_with_the_reason():
    cfg = Config()
    cfg.rollout.top_p = 0.9
    with pytest.raises(ConfigError, match="rollout.top_p"):
        validate(cfg)


@pytest.mark.parametrize(
    "change",
    [{"clip_ratio_c": 1.0}, {"log_ratio_clamp": 0.0}, {"overlong_buffer": 48}],
)
def test_bad_loss_knobs_are_refused(change):
    cfg = Config()
    for key, value in change.items():
        setattr(cfg.algo, key, value)
    with pytest.raises(ConfigError, match="algo."):
        validate(cfg)
