"""Which modules the FP8 recipe converts, on tiny Qwen3 and Qwen3-MoE models."""

from __future__ import annotations

import pytest
import torch

from learner.fp8 import convert_to_fp8, plan_fp8
from learner.setup import trains_on_cpu


def _qwen3(moe: bool):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    common = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        tie_word_embeddings=True,
    )
    if moe:
        config = Qwen3MoeConfig(
            **common, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2
        )
        return Qwen3MoeForCausalLM(config)
    return Qwen3ForCausalLM(Qwen3Config(**common))


def test_dense_blocks_linears_convert_and_sensitive_layers_stay():
    plan = plan_fp8(_qwen3(moe=False))
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert sorted(plan.converted) == sorted(
        f"model.layers.{i}.{part}.{p}"
        for i in range(2)
        for part, names in (("self_attn", projections[:4]), ("mlp", projections[4:]))
        for p in names
    )
    kept = " ".join(plan.kept)
    assert "lm_head" in kept and "embed_tokens" in kept and "model.norm (norm)" in kept


def test_moe_router_and_fused_experts_stay():
    plan = plan_fp8(_qwen3(moe=True))
    assert "model.layers.0.mlp.gate (MoE router)" in plan.kept
    assert any(k.startswith("model.layers.0.mlp.experts (fused experts") for k in plan.kept)
    assert all("mlp" not in name for name in plan.converted)


def test_converted_model_trains_and_keeps_its_state_dict_names():
    pytest.importorskip("torchao")
    model = _qwen3(moe=False)
    names = set(model.state_dict())
    plan = convert_to_fp8(model, emulate=True)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Float8Linear"
    assert type(model.lm_head).__name__ == "Linear" and len(plan.converted) == 14
    assert set(model.state_dict()) == names  # exports and checkpoints are unchanged
    logits = model(input_ids=torch.randint(0, 256, (2, 16))).logits
    logits.logsumexp(-1).mean().backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None


def test_start_up_listing_folds_layer_indices():
    from learner.fp8 import compact

    plan = plan_fp8(_qwen3(moe=False))
    assert compact(plan.converted) == [
        f"model.layers.*.{p}"
        for p in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    ]


def _float8_linear(emulate: bool):
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 384, bias=False))
    return convert_to_float8_training(model, config=Float8LinearConfig(emulate=emulate))


def test_a_cpu_learner_emulates_the_float8_matmuls_with_the_same_result():
    """On CPU the recipe runs its float8 matmuls emulated (learner/fp8.py: torch's
    `_scaled_mm` hands them to oneDNN's reference kernel on a CPU with AMX). The
    emulation is the arithmetic of torch's own CPU float8 product (its non-oneDNN
    path, taken with oneDNN off): the same output and gradients to fp32 rounding."""
    pytest.importorskip("torchao")
    model = _qwen3(moe=False)
    assert trains_on_cpu()  # the unit tier runs without CUDA
    plan = convert_to_fp8(model, emulate=trains_on_cpu())
    assert plan.emulated and model.model.layers[0].mlp.up_proj.config.emulate
    assert not convert_to_fp8(_qwen3(moe=False), emulate=False).emulated

    emulated, scaled_mm = _float8_linear(emulate=True), _float8_linear(emulate=False)
    x = torch.randn(64, 128, requires_grad=True)
    out = emulated(x)
    with torch.backends.mkldnn.flags(enabled=False):  # torch's own float8 product
        reference = scaled_mm(x)
        reference.square().sum().backward()
    grad_x, x.grad = x.grad, None
    out.square().sum().backward()
    fp32 = x @ emulated[0].weight.t()
    assert (out - fp32).abs().max() > 1e-3  # float8 rounding happened
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, grad_x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        emulated[0].weight.grad, scaled_mm[0].weight.grad, rtol=1e-4, atol=1e-4
    )
