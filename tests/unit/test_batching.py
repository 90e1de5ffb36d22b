"""Micro-batch planning: trainable samples only, token budget, same plan on every rank."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import AlgoConfig
from core.types import Batch, Group, RoutedExperts, Status, Trajectory
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


def _routing(rows: list[list[list[int]] | None], dtype: str = "uint8") -> RoutedExperts:
    """Token-aligned routing from per-token [layer][k] expert ids (None: unknown)."""
    shape = next(np.array(r).shape for r in rows if r is not None)
    data = [None if r is None else np.array(r, dtype=dtype).tobytes() for r in rows]
    return RoutedExperts(shape[0], shape[1], dtype, data)


def test_routing_lands_on_every_known_position_prompt_included():
    carrying = _traj(0, 3, 2, 1.0)  # 3 prompt + 2 generated; the last was never run
    known = [[[1, 2], [0, 3]], [[3, 0], [1, 2]], [[2, 3], [3, 1]], [[0, 2], [2, 0]]]
    carrying.routed_experts = _routing([*known, None], dtype="uint16")
    plain = _traj(1, 4, 2, 0.0)
    samples = collect_samples(
        Batch([Group("g", "e", 0, [carrying, plain])], 0), make_algorithm(AlgoConfig())
    )
    (micro,) = plan_micro_batches(samples, token_budget=100, world_size=1, pad_id=0)
    rows = {
        len(s.tokens): row for row, s in enumerate(sorted(samples, key=lambda s: len(s.tokens)))
    }
    row = rows[5]
    assert micro.routing.shape == (2, 6, 2, 2)  # [B, T, layers, k], padded to 6
    assert micro.routing_mask[row].tolist() == [True, True, True, True, False, False]
    assert micro.routing[row, :4].tolist() == known
    assert not micro.routing[row, 4:].any()
    assert not micro.routing_mask[rows[6]].any()


def test_unknown_positions_inside_a_sample_are_left_to_the_learner():
    """A position no call reported (here the middle one) is masked out, and the rows
    after it still land on their own positions."""
    traj = _traj(0, 2, 2, 1.0)
    traj.routed_experts = _routing([[[1, 2]], None, [[3, 0]], None])
    samples = collect_samples(
        Batch([Group("g", "e", 0, [traj, _traj(1, 2, 2, 0.0)])], 0), make_algorithm(AlgoConfig())
    )
    (micro,) = plan_micro_batches(samples, token_budget=100, world_size=1, pad_id=0)
    row = next(i for i, s in enumerate(samples) if s.routed_experts is not None)
    assert micro.routing_mask[row].tolist() == [True, False, True, False]
    assert micro.routing[row, 0, 0].tolist() == [1, 2] and micro.routing[row, 2, 0].tolist() == [
        3,
        0,
    ]


def test_routing_of_another_shape_in_one_micro_batch_is_refused():
    a, b = _traj(0, 2, 2, 1.0), _traj(1, 2, 2, 0.0)
    a.routed_experts = _routing([[[1, 2]], [[1, 2]], [[1, 2]], None])
    b.routed_experts = _routing([[[1, 2, 3]], [[1, 2, 3]], [[1, 2, 3]], None])
    samples = collect_samples(Batch([Group("g", "e", 0, [a, b])], 0), make_algorithm(AlgoConfig()))
    with pytest.raises(ValueError, match="in one micro-batch"):
        plan_micro_batches(samples, token_budget=100, world_size=1, pad_id=0)


def test_trajectory_keeps_one_routing_row_per_token():
    traj = _traj(0, 2, 2, 1.0)
    with pytest.raises(ValueError, match="rows for 4 tokens"):
        Trajectory(**{**vars(traj), "routed_experts": _routing([[[1, 2]], None])})
    traj.routed_experts = _routing([[[1, 2]], [[1, 2]], [[1, 2]], None])
    traj.append([5, 6], generated=False)  # an observation arrives: unknown until run
    assert traj.routed_experts.rows[4:] == [None, None] and traj.routed_experts.frontier == 3
    with pytest.raises(ValueError, match="bytes"):
        traj.routed_experts.place(3, [b"\x01"])


def test_no_routing_when_no_sample_carries_it():
    samples = collect_samples(
        Batch([Group("g", "e", 0, [_traj(0, 3, 2, 1.0), _traj(1, 3, 2, 0.0)])], 0),
        make_algorithm(AlgoConfig()),
    )
    (micro,) = plan_micro_batches(samples, token_budget=100, world_size=1, pad_id=0)
    assert micro.routing is None and micro.routing_mask is None


def test_images_ride_with_their_samples_and_turn_prompt_sharing_off():
    """Two samples of one prompt would share it (learner.shared_prefix); with images
    they are trained whole, each with its own PNG bytes in sample order."""
    trajs = [_traj(i, 6, 3, float(i)) for i in range(2)]
    plain = collect_samples(Batch([Group("g", "e", 0, trajs)], 0), make_algorithm(AlgoConfig()))
    (shared,) = plan_micro_batches(plain, 1000, 1, 0, share_prefix=True)
    assert shared.prefixes is not None and shared.images is None

    for i, traj in enumerate(trajs):
        traj.images = [f"png{i}".encode()]
    samples = collect_samples(Batch([Group("g", "e", 0, trajs)], 0), make_algorithm(AlgoConfig()))
    (micro,) = plan_micro_batches(samples, 1000, 1, 0, share_prefix=True)
    assert micro.prefixes is None
    assert micro.images == [[b"png0"], [b"png1"]]
    assert micro.input_ids.shape == (2, 9)
