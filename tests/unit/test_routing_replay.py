"""Routing replay (R3) on a tiny Qwen3-MoE and a tiny hybrid Qwen3.5-MoE (Gated
DeltaNet layers too, a shared expert beside the routed ones): exact when replaying the learner's own
routing (also through the token-aligned trajectory layout and the learner's
collation), different experts when replaying a different one, router still learns."""

from __future__ import annotations

import pytest
import torch

from core.types import RoutedExperts
from learner.batching import Sample, collate
from learner.routing_replay import RoutingReplay
from tests.tiny_models import tiny_moe, tiny_qwen35_moe

EXPERTS, TOP_K, LAYERS = 4, 2, 2


@pytest.fixture(params=[tiny_moe, tiny_qwen35_moe], ids=["qwen3_moe", "qwen3_5_moe"])
def moe(request):
    return request.param(vocab_size=128, layers=LAYERS, experts=EXPERTS, top_k=TOP_K)


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
    with pytest.raises(ValueError, match="decoder layers"):
        with replay.replaying(torch.zeros(ids.numel(), 5, TOP_K), torch.ones(ids.numel())):
            pass


def test_dense_layers_columns_of_the_engines_routing_are_skipped(ids):
    """vLLM's routing has a column per decoder layer, dense ones included; a router
    reads the column of its own decoder layer."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=3, mlp_only_layers=[1], num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, num_experts=EXPERTS, num_experts_per_tok=TOP_K,
    )  # fmt: skip
    model = Qwen3MoeForCausalLM(config)
    for layer in (model.model.layers[0], model.model.layers[2]):
        torch.nn.init.normal_(layer.mlp.gate.weight, std=0.5)
    replay = RoutingReplay(model)
    assert replay.layers == [0, 2] and replay.num_decoder_layers == 3
    with replay.recording() as recorded:
        reference = model(input_ids=ids).logits
    engine = torch.zeros(ids.numel(), 3, TOP_K, dtype=torch.long)
    engine[:, 0], engine[:, 2] = recorded[0], recorded[1]
    engine[:, 1] = (recorded[0] + 1) % EXPERTS  # a dense layer's column: never read
    everywhere = torch.ones(ids.numel(), dtype=torch.bool)
    with replay.replaying(engine, everywhere):
        assert torch.equal(model(input_ids=ids).logits, reference)
    engine[:, 2] = (recorded[1] + 1) % EXPERTS
    with replay.replaying(engine, everywhere):
        assert not torch.allclose(model(input_ids=ids).logits, reference)


def _samples(lengths: list[int], prompt: int) -> list[Sample]:
    rng = torch.Generator().manual_seed(2)
    samples = []
    for n in lengths:
        tokens = torch.randint(1, 128, (n,), generator=rng).tolist()
        samples.append(Sample(tokens, [0] * prompt + [1] * (n - prompt), [0.0] * n, 1.0, 0))
    return samples


def _token_aligned(experts: torch.Tensor, n: int) -> RoutedExperts:
    """The engine's layout on a trajectory: rows for all but the last token."""
    rows = [experts[t].to(torch.uint8).numpy().tobytes() for t in range(n - 1)]
    return RoutedExperts(LAYERS, TOP_K, "uint8", [*rows, None])


def _replayed_logits(moe, replay, micro) -> torch.Tensor:
    rows, width, layers, k = micro.routing.shape
    with replay.replaying(micro.routing.view(rows * width, layers, k), micro.routing_mask.view(-1)):
        return moe(input_ids=micro.input_ids, attention_mask=micro.attention_mask).logits


def test_the_learners_own_routing_through_the_batch_layout_is_bit_exact(moe):
    """Routing recorded per input position, carried token-aligned on samples of
    different lengths and collated back (padding and all): every logit of every
    position comes back bit for bit; the same rows one position off do not."""
    replay = RoutingReplay(moe)
    samples = _samples([9, 14, 11], prompt=5)
    micro = collate(samples, pad_id=0)
    with replay.recording() as recorded:
        reference = moe(input_ids=micro.input_ids, attention_mask=micro.attention_mask).logits
    own = torch.stack(recorded, dim=1).view(len(samples), -1, LAYERS, TOP_K)  # [B, T, L, k]
    for row, sample in enumerate(samples):
        sample.routed_experts = _token_aligned(own[row], len(sample.tokens))
    micro = collate(samples, pad_id=0)
    assert torch.equal(_replayed_logits(moe, replay, micro), reference)
    for row, sample in enumerate(samples):  # one position late: misaligned rows
        sample.routed_experts = _token_aligned(own[row, 1:], len(sample.tokens))
    assert not torch.equal(_replayed_logits(moe, replay, collate(samples, pad_id=0)), reference)


def test_prompt_positions_routing_reaches_the_generated_tokens_logits(moe):
    """Why prompt positions are replayed too: other experts at the prompt alone
    change the logits that score the generated tokens."""
    replay = RoutingReplay(moe)
    (sample,) = _samples([12], prompt=6)
    micro = collate([sample], pad_id=0)
    with replay.recording() as recorded:
        reference = moe(input_ids=micro.input_ids).logits
    own = torch.stack(recorded, dim=1)  # [T, L, k]
    other = own.clone()
    other[:6] = (own[:6] + 1) % EXPERTS
    sample.routed_experts = _token_aligned(other, 12)
    logits = _replayed_logits(moe, replay, collate([sample], pad_id=0))
    generated = slice(5, 11)  # positions whose logits score generated tokens 6..11
    assert not torch.allclose(logits[0, generated], reference[0, generated])
