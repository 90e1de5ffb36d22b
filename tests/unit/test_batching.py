"""Micro-batch planning: trainable samples only, token budget, same plan on every rank."""

from __future__ import annotations

import pytest

from core.config import AlgoConfig
from core.types import Batch, Group, Status, Trajectory
from learner.algos import make_algorithm
from learner.batching import collect_samples, plan_micro_batches


def _traj(i, n_prompt, n_gen, reward, status=Status.COMPLETED):
    t = Trajectory(f"t{i}", "g", "e", 0, n_prompt)
    t.append(list(range(1, n_prompt + 1)), generated=False)
    t.append([7] * n_gen, generated=True, logprobs=[-1.0] * n_gen, versions=[0] * n_gen)
    t.reward, t.status = reward, status
    return t


def test_failed_trajectories_are_left_out_of_group_baselines():
    group = Group(
        "g", "e", 0, [_traj(0, 3, 2, 1.0), _traj(1, 3, 2, 0.0), _traj(2, 3, 2, 5.0, Status.FAILED)]
    )
    samples = collect_samples(Batch([group], 0), make_algorithm(AlgoConfig()))
    # rewards 1, 0: sample std 1/sqrt(2), so advantages +-1/sqrt(2)
    assert [s.advantage for s in samples] == pytest.approx([0.5**0.5, -(0.5**0.5)], abs=1e-5)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_plan_respects_budget_and_weights_sum_to_one(world):
    trajs = [_traj(i, 10 + i, 5 + i % 3, float(i % 2)) for i in range(9)]
    samples = collect_samples(Batch([Group("g", "e", 0, trajs)], 0), make_algorithm(AlgoConfig()))
    plan = plan_micro_batches(samples, token_budget=60, world_size=world, pad_id=0)
    assert len(plan) % world == 0
    real = [m for m in plan if m is not None]
    assert all(m.input_ids.numel() <= 60 for m in real)
    assert sum(int(m.input_ids.shape[0]) for m in real) == 9
    assert sum(float(m.weights.sum()) for m in real) == pytest.approx(1.0)
    assert sum(m.num_tokens for m in real) == sum(t.num_generated for t in trajs)


def test_routing_lands_on_the_generated_positions_of_samples_that_carry_it():
    carrying = _traj(0, 3, 2, 1.0)
    carrying.routed_experts = [[[1, 2]], [[3, 0]]]  # 2 generated tokens, 1 layer, top-2
    plain = _traj(1, 4, 2, 0.0)
    samples = collect_samples(
        Batch([Group("g", "e", 0, [carrying, plain])], 0), make_algorithm(AlgoConfig())
    )
    (micro,) = plan_micro_batches(samples, token_budget=100, world_size=1, pad_id=0)
    rows = {
        len(s.tokens): row for row, s in enumerate(sorted(samples, key=lambda s: len(s.tokens)))
    }
    row = rows[5]
    assert micro.routing.shape == (2, 6, 1, 2)
    assert micro.routing_mask[row].tolist() == [False, False, False, True, True, False]
    assert micro.routing[row, 3, 0].tolist() == [1, 2] and micro.routing[row, 4, 0].tolist() == [
        3,
        0,
    ]
    assert not micro.routing_mask[rows[6]].any()


def test_no_routing_when_no_sample_carries_it():
    samples = collect_samples(
        Batch([Group("g", "e", 0, [_traj(0, 3, 2, 1.0), _traj(1, 3, 2, 0.0)])], 0),
        make_algorithm(AlgoConfig()),
    )
    (micro,) = plan_micro_batches(samples, token_budget=100, world_size=1, pad_id=0)
    assert micro.routing is None and micro.routing_mask is None
