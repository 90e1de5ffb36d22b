"""The tiny vision-language policy (`model.tiny.architecture=idefics3`): a one-layer
SigLIP-style vision tower, Idefics3's pixel-shuffle connector and a Llama text model,
built from config with its own tokenizer, image processor and a Qwen-style chat
template that writes `<image>` per image.

Idefics3, not Qwen3.5's vision tower: vLLM 0.32 on CPU cannot build a Qwen-VL's
processor without torchvision (transformers_utils/processor.py:247,
"Qwen2VLVideoProcessor requires the Torchvision library"), and PyPI's torchvision for
torch 2.13 is a CUDA build; Idefics3's vLLM module and its PIL image processor need
none, and its image token is expanded the same way (one token per image feature).

Weights are random, then warmed up on Shapes-v0's scripted answers so that its turns
end (`<answer>...</answer>` and the end-of-turn token) and episodes get scored; what
it answers is left to RL.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from core.config import TinyModelConfig

DEMO_ENV = "asyncrl/Shapes-v0"
DEMO_FIRST_SEED = 10_000
IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
IMAGE_SIZE = 112
PATCH_SIZE = 14
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
"""Image features per image: (112 / 14)^2 patches, pixel-shuffled by 2 each way (16)."""


def build_tiny_vl_policy(tiny: TinyModelConfig, target: Path) -> list[float]:
    """Build, warm up and save the policy `tiny` describes (model, tokenizer, processor)
    into `target`; returns the warm-up losses."""
    from transformers import Idefics3ForConditionalGeneration

    dialogues = demonstrations(tiny.demos)
    processor = build_processor(dialogues, tiny.vocab_size)
    torch.manual_seed(tiny.seed)
    model = Idefics3ForConditionalGeneration(model_config(processor.tokenizer, tiny))
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    losses = warm_up(model, processor, dialogues, tiny)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return losses


def demonstrations(count: int) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """`count` (opening messages, scripted answer) pairs of Shapes-v0 (seeds from
    DEMO_FIRST_SEED, away from those RL tasks use)."""
    from envs import make_env
    from envs.shapes import scripted_reply

    env = make_env(DEMO_ENV)
    dialogues = []
    for seed in range(DEMO_FIRST_SEED, DEMO_FIRST_SEED + count):
        observation, info = env.reset(seed=seed)
        reply = {"role": "assistant", "content": scripted_reply(info["task"])}
        dialogues.append(([dict(m) for m in observation], reply))
    return dialogues


def build_processor(
    dialogues: list[tuple[list[dict[str, Any]], dict[str, Any]]], vocab: int
) -> Any:
    """A BPE tokenizer trained on the rendered dialogues, with Idefics3's image tokens,
    and the PIL image processor (one 112-pixel crop per image, no splitting)."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    from bootstrap.build import build_tokenizer, corpus_template
    from core.chat import qwen_style_template

    template = qwen_style_template("<image>")
    render = corpus_template(template)
    corpus = [render.render(messages=opening + [reply]) for opening, reply in dialogues]
    tokenizer = build_tokenizer(corpus, vocab_size=vocab)
    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS + grid})
    tokenizer.chat_template = template
    size = {"longest_edge": IMAGE_SIZE}
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size=size, max_image_size=size
    )
    return Idefics3Processor(
        image_processor, tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=template
    )


def model_config(tokenizer: Any, tiny: TinyModelConfig) -> Any:
    """Idefics3's config: the text model from `tiny`'s sizes, a fixed tiny vision tower."""
    from transformers import Idefics3Config

    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Idefics3Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=tiny.hidden_size,
            intermediate_size=tiny.intermediate_size,
            num_hidden_layers=tiny.num_layers,
            num_attention_heads=tiny.num_heads,
            num_key_value_heads=tiny.num_kv_heads,
            head_dim=tiny.head_dim,
            max_position_embeddings=1024,
            rope_theta=10000.0,
            bos_token_id=None,
            tie_word_embeddings=True,
            **ids,
        ),
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=True,
        **ids,
    )


def processor_inputs(processor: Any, texts: list[str], images: list) -> dict[str, torch.Tensor]:
    """The processor's model inputs for rendered `texts`, one image each (ids with each
    image's placeholder expanded, pixel values)."""
    return processor(
        text=texts,
        images=[[image] for image in images],
        add_special_tokens=False,
        padding=True,
        return_tensors="pt",
    )


def warm_up(
    model: Any,
    processor: Any,
    dialogues: list[tuple[list[dict[str, Any]], dict[str, Any]]],
    tiny: TinyModelConfig,
) -> list[float]:
    """Cross-entropy on the answers' tokens (the prompt, image included, is context)."""
    render = processor.tokenizer.apply_chat_template
    rng = random.Random(tiny.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tiny.warmup_lr)
    model.train()
    losses = []
    for _ in range(tiny.warmup_steps):
        batch = rng.sample(dialogues, min(tiny.warmup_batch_size, len(dialogues)))
        images = [opening[1]["content"][0]["image"] for opening, _ in batch]
        prompts = [
            render(opening, tokenize=False, add_generation_prompt=True) for opening, _ in batch
        ]
        full = [render(opening + [reply], tokenize=False) for opening, reply in batch]
        inputs = processor_inputs(processor, full, images)
        prompt_lengths = processor_inputs(processor, prompts, images)["attention_mask"].sum(dim=1)
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
