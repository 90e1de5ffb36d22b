"""Routing replay through the real learner: a tiny Qwen3-MoE on a DeepSpeed rank
trains on trajectories that carry routed experts. With the learning rate at 0:
forcing experts changes the loss, forcing other experts changes it again, and
a batch without routing afterwards gives the learner's own loss back (replay
leaves nothing behind). Exactness of replay is pinned in tests/unit."""

from __future__ import annotations

import copy

import pytest

from orchestrator.system import LearnerGroup
from tests.integration.conftest import small_run_config
from tests.integration.test_learner_ranks import _batch
from tests.tiny_models import tiny_moe

LAYERS, EXPERTS, TOP_K = 2, 4, 2


@pytest.fixture(scope="module")
def moe_policy(tmp_path_factory) -> str:
    model = tiny_moe(vocab_size=320, layers=LAYERS, experts=EXPERTS, top_k=TOP_K)
    path = tmp_path_factory.mktemp("moe") / "policy"
    model.save_pretrained(path)
    return str(path)


def _with_routing(batch, routing_for):
    batch = copy.deepcopy(batch)
    for traj in batch.trajectories:
        traj.routed_experts = [routing_for(traj, i) for i in range(traj.num_generated)]
    return batch


def test_replayed_routing_reaches_the_learners_moe_layers(
    ray_cluster, moe_policy, tmp_path, event_loop_runner
):
    run = event_loop_runner
    cfg = small_run_config(tmp_path)
    cfg.learner.lr = 0.0  # compare losses of the same weights
    batch = _batch(0, seed=0)
    group = run(LearnerGroup.start(cfg, moe_policy))
    try:
        plain = run(group.train_step(batch))["learner/loss"]
        fixed = _with_routing(batch, lambda t, i: [[0, 1]] * LAYERS)
        replayed = run(group.train_step(fixed))["learner/loss"]
        shifted = _with_routing(batch, lambda t, i: [[2, 3]] * LAYERS)
        other = run(group.train_step(shifted))["learner/loss"]
        again = run(group.train_step(batch))["learner/loss"]
    finally:
        group.kill()
    assert again == plain  # lr 0: nothing moved, and replay left nothing behind
    assert replayed != plain and other != replayed
