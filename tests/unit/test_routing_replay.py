"""Routing replay (R3) on a tiny Qwen3-MoE: exact when replaying the learner's own
routing, different experts when replaying a different one, router still learns."""

from __future__ import annotations

import pytest
import torch

from learner.routing_replay import RoutingReplay
from tests.tiny_models import tiny_moe

EXPERTS, TOP_K, LAYERS = 4, 2, 2


@pytest.fixture()
def moe():
    return tiny_moe(vocab_size=128, layers=LAYERS, experts=EXPERTS, top_k=TOP_K)


@pytest.fixture()
def ids():
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))


def _experts_run(model) -> list[torch.Tensor]:
    """Hook every experts block: the expert ids it actually ran, per call."""
    seen: list[torch.Tensor] = []
    for layer in model.model.layers:
        layer.mlp.experts.register_forward_hook(
            lambda _m, args, _out: seen.append(args[1].detach().clone())
        )
    return seen


def test_taking_over_the_routers_changes_nothing_by_itself(moe, ids):
    before = moe(input_ids=ids).logits
    RoutingReplay(moe)
    assert torch.equal(moe(input_ids=ids).logits, before)


def test_replaying_the_learners_own_routing_is_exact(moe, ids):
    replay = RoutingReplay(moe)
    with replay.recording() as recorded:
        reference = moe(input_ids=ids).logits
    routing = torch.stack(recorded, dim=1)  # [tokens, layers, k]
    assert routing.shape == (ids.numel(), LAYERS, TOP_K)
    with replay.replaying(routing, torch.ones(ids.numel(), dtype=torch.bool)):
        assert torch.equal(moe(input_ids=ids).logits, reference)


def test_replaying_other_routing_runs_those_experts(moe, ids):
    replay = RoutingReplay(moe)
    with replay.recording() as recorded:
        reference = moe(input_ids=ids).logits
    other = (torch.stack(recorded, dim=1) + 1) % EXPERTS
    seen = _experts_run(moe)
    mask = torch.ones(ids.numel(), dtype=torch.bool)
    mask[:3] = False  # the first tokens keep the learner's own routing
    with replay.replaying(other, mask):
        logits = moe(input_ids=ids).logits
    assert not torch.allclose(logits, reference)
    for layer, ran in enumerate(seen):
        assert torch.equal(ran[3:], other[3:, layer])
    # unmasked tokens route themselves; in layer 0 their inputs are unchanged
    assert torch.equal(seen[0][:3], recorded[0][:3])


def test_router_still_learns_under_replay(moe, ids):
    replay = RoutingReplay(moe)
    with replay.recording() as recorded:
        moe(input_ids=ids)
    routing = (torch.stack(recorded, dim=1) + 1) % EXPERTS
    with replay.replaying(routing, torch.ones(ids.numel(), dtype=torch.bool)):
        moe(input_ids=ids).logits.logsumexp(-1).mean().backward()
    assert all(layer.mlp.gate.weight.grad.abs().sum() > 0 for layer in moe.model.layers)


def test_wrong_layer_count_is_one_clear_error(moe, ids):
    replay = RoutingReplay(moe)
    with pytest.raises(ValueError, match="MoE layers"):
        with replay.replaying(torch.zeros(ids.numel(), 5, TOP_K), torch.ones(ids.numel())):
            pass
