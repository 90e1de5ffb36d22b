"""Tiny models from config for tests (random weights, seeded).

MoE models for routing tests, and the tiny vision-language policy (bootstrap.tiny_vl,
what `model=tiny_vl` builds) for the multimodal path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bootstrap.tiny_vl import IMAGE_SEQ_LEN, build_tiny_vl_policy, processor_inputs
from core.config import TinyModelConfig


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


def tiny_qwen35_moe(vocab_size: int, layers: int = 2, experts: int = 4, top_k: int = 2):
    """A 64-wide Qwen3.5-MoE: Gated DeltaNet and gated full-attention layers in turn,
    every layer routed over `experts` plus a shared expert; spread-out routers."""
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    torch.manual_seed(0)
    config = Qwen3_5MoeTextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        linear_key_head_dim=64,
        linear_value_head_dim=64,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        full_attention_interval=2,
        num_experts=experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        pad_token_id=0,
    )
    model = Qwen3_5MoeForCausalLM(config)
    for layer in model.model.layers:
        torch.nn.init.normal_(layer.mlp.gate.weight, std=0.5)
    return model


# -- a tiny vision-language model ----------------------------------------------------

VL_IMAGE_SEQ_LEN = IMAGE_SEQ_LEN
VL_TINY = TinyModelConfig(
    architecture="idefics3",
    vocab_size=400,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    head_dim=32,
    demos=400,
    warmup_steps=60,
    warmup_batch_size=8,
    warmup_lr=1e-2,
)
"""What `model=tiny_vl` builds (conf/model/tiny_vl.yaml), warmed up for about 7 s."""


def tiny_vl_model(target: Path, warmup_steps: int = 60, seed: int = 0) -> str:
    """The tiny Idefics3 policy (bootstrap.tiny_vl) saved to `target`."""
    import dataclasses

    tiny = dataclasses.replace(VL_TINY, warmup_steps=warmup_steps, seed=seed)
    build_tiny_vl_policy(tiny, target)
    return str(target)


def vl_inputs(processor, texts: list[str], images: list) -> dict[str, torch.Tensor]:
    """The HF processor's model inputs for rendered `texts`, one image each
    (ids with each image's placeholder expanded, pixel values)."""
    return processor_inputs(processor, texts, images)
