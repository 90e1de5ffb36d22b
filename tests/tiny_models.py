"""Tiny Qwen3-MoE models from config for tests (random weights, seeded)."""

from __future__ import annotations

import torch


def tiny_moe(vocab_size: int, layers: int = 2, experts: int = 4, top_k: int = 2):
    """A 64-wide Qwen3-MoE whose routers have spread-out weights (so routing is
    decided, not a tie between all-zero gates)."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        num_experts=experts,
        num_experts_per_tok=top_k,
        decoder_sparse_step=1,
        norm_topk_prob=True,
        pad_token_id=0,
    )
    model = Qwen3MoeForCausalLM(config)
    for layer in model.model.layers:
        torch.nn.init.normal_(layer.mlp.gate.weight, std=0.5)
    return model
