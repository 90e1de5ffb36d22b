"""Routing replay through the real learner: a tiny Qwen3-MoE on a DeepSpeed rank
trains on trajectories that carry routed experts token-aligned, as the rollout
agent records vLLM's rows (every position but the last). With the learning rate
at 0: the learner's own routing, recorded here from the same weights and replayed
at every position, gives its loss back bit for bit; forcing experts changes the
loss, forcing other experts changes it again, other experts at the prompt
positions alone change it too (prompt positions are replayed), and a batch
without routing afterwards gives the learner's own loss back (replay leaves
nothing behind). That every logit comes back exactly is pinned in tests/unit."""

from __future__ import annotations

import copy

import pytest
import torch

from core.types import RoutedExperts
from learner.routing_replay import RoutingReplay
from orchestrator.learners import LearnerGroup
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


def _own_routing(policy: str, tokens: list[int]) -> torch.Tensor:
    """[T, layers, k]: the experts the policy's own routers pick for `tokens`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    replay = RoutingReplay(model)
    with torch.no_grad(), replay.recording() as recorded:
        model(input_ids=torch.tensor([tokens]))
    return torch.stack(recorded, dim=1)


def _with_routing(batch, routing_for):
    """`routing_for(traj)` -> [T, layers, k] experts; recorded as the agent does:
    one row per token, the last token's unknown (vLLM never runs it)."""
    batch = copy.deepcopy(batch)
    for traj in batch.trajectories:
        experts = routing_for(traj)
        rows = [experts[t].to(torch.uint8).numpy().tobytes() for t in range(len(traj.tokens) - 1)]
        traj.routed_experts = RoutedExperts(LAYERS, TOP_K, "uint8", [*rows, None])
    return batch


def test_replayed_routing_reaches_the_learners_moe_layers(
    ray_cluster, moe_policy, tmp_path, event_loop_runner
):
    run = event_loop_runner
    cfg = small_run_config(tmp_path)
    cfg.learner.lr = 0.0  # compare losses of the same weights
    batch = _batch(0, seed=0)
    own = {t.trajectory_id: _own_routing(moe_policy, t.tokens) for t in batch.trajectories}

    def fixed(experts):
        return lambda t: torch.tensor(experts).expand(len(t.tokens), LAYERS, TOP_K)

    def other_prompt(t):
        routing = own[t.trajectory_id].clone()
        routing[: t.prompt_length] = (routing[: t.prompt_length] + 1) % EXPERTS
        return routing

    group = run(LearnerGroup.start(cfg, moe_policy))
    try:
        plain = run(group.train_step(batch))["learner/loss"]
        replayed_own = run(group.train_step(_with_routing(batch, lambda t: own[t.trajectory_id])))
        replayed = run(group.train_step(_with_routing(batch, fixed([0, 1]))))["learner/loss"]
        other = run(group.train_step(_with_routing(batch, fixed([2, 3]))))["learner/loss"]
        prompt_only = run(group.train_step(_with_routing(batch, other_prompt)))["learner/loss"]
        again = run(group.train_step(batch))["learner/loss"]
    finally:
        group.kill()
    assert replayed_own["learner/loss"] == plain  # the learner's own routing, bit for bit
    assert again == plain  # lr 0: nothing moved, and replay left nothing behind
    assert replayed != plain and other != replayed
    assert prompt_only != plain  # prompt positions are replayed, and they matter
