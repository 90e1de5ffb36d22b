"""Tiny models from config for tests (random weights, seeded).

A Qwen3-MoE for routing tests, and a vision-language model for the multimodal
path. They live here, not in orchestrator.bootstrap, because only tests use them:
no run trains a VL policy yet (the learner trains on text only).
"""

from __future__ import annotations

from pathlib import Path

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

VL_IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
VL_IMAGE_SEQ_LEN = 16
"""Image features per image: (112 / 14)^2 patches, pixel-shuffled by 2 in each direction."""


def tiny_vl_model(target: Path, warmup_steps: int = 60, seed: int = 0) -> str:
    """A tiny Idefics3 (a one-layer SigLIP-style vision tower, pixel-shuffle
    connector, two-layer Llama) saved to `target` with its tokenizer, image
    processor and the Qwen-style chat template writing `<image>` per image.

    Weights are random, then warmed up for `warmup_steps` (about 7 s) on Shapes-v0
    answers so that its turns end (`<answer>...</answer>` and the end-of-turn
    token) and an episode gets scored; what it answers does not matter. Idefics3, not a
    Qwen-VL: vLLM 0.32's Qwen2-VL/2.5-VL/3-VL modules import torchvision, which
    has no CPU build for torch 2.13 on PyPI (see tests/integration/test_multimodal.py).
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    from bootstrap.build import build_tokenizer, corpus_template
    from core.chat import qwen_style_template
    from envs import make_env
    from envs.shapes import scripted_reply

    template = qwen_style_template("<image>")
    env = make_env("asyncrl/Shapes-v0")
    dialogues = []
    for task_seed in range(10_000, 10_400):
        observation, info = env.reset(seed=task_seed)
        reply = {"role": "assistant", "content": scripted_reply(info["task"])}
        dialogues.append(([dict(m) for m in observation], reply))
    render = corpus_template(template)
    corpus = [render.render(messages=opening + [reply]) for opening, reply in dialogues]
    tokenizer = build_tokenizer(corpus, vocab_size=400)
    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tokenizer.add_special_tokens({"additional_special_tokens": VL_IMAGE_TOKENS + grid})
    tokenizer.chat_template = template
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 112}, max_image_size={"longest_edge": 112}
    )
    processor = Idefics3Processor(
        image_processor, tokenizer, image_seq_len=VL_IMAGE_SEQ_LEN, chat_template=template
    )
    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=112,
            patch_size=14,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=1024,
            rope_theta=10000.0,
            bos_token_id=None,
            tie_word_embeddings=True,
            **ids,
        ),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=True,
        **ids,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    _warm_up_vl(model, processor, dialogues, warmup_steps, seed)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return str(target)


def vl_inputs(processor, texts: list[str], images: list) -> dict[str, torch.Tensor]:
    """The HF processor's model inputs for rendered `texts`, one image each
    (ids with each image's placeholder expanded, pixel values)."""
    return processor(
        text=texts,
        images=[[image] for image in images],
        add_special_tokens=False,
        padding=True,
        return_tensors="pt",
    )


def _warm_up_vl(model, processor, dialogues, steps: int, seed: int) -> list[float]:
    """Cross-entropy on the assistant's answer tokens (the prompt, image included, is context)."""
    import random

    render = processor.tokenizer.apply_chat_template
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        batch = rng.sample(dialogues, 8)
        images = [opening[1]["content"][0]["image"] for opening, _ in batch]
        prompts = [
            render(opening, tokenize=False, add_generation_prompt=True) for opening, _ in batch
        ]
        full = [render(opening + [reply], tokenize=False) for opening, reply in batch]
        inputs = vl_inputs(processor, full, images)
        prompt_lengths = vl_inputs(processor, prompts, images)["attention_mask"].sum(dim=1)
        labels = inputs["input_ids"].clone()
        positions = torch.arange(labels.shape[1])
        labels[positions[None, :] < prompt_lengths[:, None]] = -100
        labels[inputs["attention_mask"] == 0] = -100
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().item())
    model.eval()
    return losses
