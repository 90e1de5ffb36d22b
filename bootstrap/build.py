"""Building a tiny Qwen3 policy: tokenizer, model from config, SFT warm-up.

No weights can be downloaded on this machine kind, so the default policy is
made here: a byte-level BPE tokenizer trained with `tokenizers` on the task's
own dialogues (digits split one per token), the Qwen-style chat template from
`core.chat`, a Qwen3 (or Qwen3-MoE) model from config, and a short supervised
warm-up on demonstration dialogues so that RL starts from a policy that
sometimes succeeds. Everything is seeded; the same inputs give the same bytes.

What the dialogues are is not this module's business (bootstrap.tiny makes
them): it receives text for the tokenizer and (ids, loss_mask) pairs for the
warm-up.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from core.chat import MARKUP_TOKENS, QWEN_STYLE_TEMPLATE, SPECIAL_TOKENS
from core.config import TinyModelConfig

log = logging.getLogger(__name__)


def build_tokenizer(corpus: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer with Qwen's special tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + MARKUP_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer)
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=SPECIAL_TOKENS[2],
        pad_token=SPECIAL_TOKENS[0],
        chat_template=QWEN_STYLE_TEMPLATE,
        model_max_length=4096,
    )


def corpus_template(source: str = QWEN_STYLE_TEMPLATE) -> Any:
    """The chat template (`source`) as plain jinja, to render tokenizer-training
    text before any tokenizer exists."""
    import jinja2

    environment = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    environment.filters["tojson"] = json.dumps
    return environment.from_string(source)


MAX_POSITIONS = 2048
"""Context length of tiny policies (rollout.max_model_len caps what a run uses)."""
SFT_LR_WARMUP_STEPS = 20


def build_model(tokenizer: Any, arch: TinyModelConfig, seed: int) -> torch.nn.Module:
    """A randomly initialised Qwen3 / Qwen3-MoE / Qwen3.5 causal LM sized by `arch`'s
    architecture fields (model.tiny; its demos and warm-up fields are not read)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        head_dim=arch.head_dim,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    if arch.architecture == "qwen3_5":
        model = _qwen3_5(common, arch)
    elif arch.num_experts > 0:
        config = Qwen3MoeConfig(
            **common,
            num_experts=arch.num_experts,
            num_experts_per_tok=arch.experts_per_token,
            moe_intermediate_size=arch.moe_intermediate_size,
            decoder_sparse_step=1,
            norm_topk_prob=True,
        )
        model = Qwen3MoeForCausalLM(config)
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**common))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _qwen3_5(common: dict[str, Any], arch: TinyModelConfig) -> torch.nn.Module:
    """Qwen3.5's text model: Gated DeltaNet layers with a gated full-attention layer
    every `full_attention_interval`, dense or MoE (routed experts plus a shared one)."""
    from transformers import (
        Qwen3_5ForCausalLM,
        Qwen3_5MoeForCausalLM,
        Qwen3_5MoeTextConfig,
        Qwen3_5TextConfig,
    )

    hybrid = dict(
        common,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=arch.linear_head_dim,
        linear_value_head_dim=arch.linear_head_dim,
        linear_num_key_heads=arch.linear_key_heads,
        linear_num_value_heads=arch.linear_value_heads,
        full_attention_interval=arch.full_attention_interval,
        mtp_num_hidden_layers=arch.mtp_layers,
    )
    if arch.num_experts == 0:
        return Qwen3_5ForCausalLM(Qwen3_5TextConfig(**hybrid))
    hybrid.pop("intermediate_size")
    config = Qwen3_5MoeTextConfig(
        **hybrid,
        num_experts=arch.num_experts,
        num_experts_per_tok=arch.experts_per_token,
        moe_intermediate_size=arch.moe_intermediate_size,
        shared_expert_intermediate_size=arch.moe_intermediate_size,
    )
    return Qwen3_5MoeForCausalLM(config)


def add_mtp_weights(model: torch.nn.Module, directory: Any) -> list[str]:
    """Write the model's multi-token-prediction layers into its saved checkpoint;
    returns their names (none for a model without `mtp_num_hidden_layers`).

    Transformers has no MTP module for Qwen3.5 (it drops `mtp.*` when loading:
    modeling_qwen3_5.py `_keys_to_ignore_on_load_unexpected`), while vLLM's
    `Qwen3_5MTP` drafts with them. Each MTP layer starts as a copy of the last
    full-attention layer, with a small random `fc` over [embedding; hidden] and
    zero (identity: Qwen3.5's norms scale by 1 + w) norms."""
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    config = model.config
    layers = getattr(config, "mtp_num_hidden_layers", 0) or 0
    if not layers:
        return []
    path = Path(directory) / "model.safetensors"
    weights = load_file(path)
    full = max(i for i, kind in enumerate(config.layer_types) if kind == "full_attention")
    prefix, hidden = f"model.layers.{full}.", config.hidden_size
    generator = torch.Generator().manual_seed(len(weights))
    added: dict[str, torch.Tensor] = {}
    for layer in range(layers):
        for name, tensor in weights.items():
            if name.startswith(prefix):
                added[f"mtp.layers.{layer}.{name[len(prefix) :]}"] = tensor.clone()
    added["mtp.fc.weight"] = torch.randn(hidden, 2 * hidden, generator=generator) * 0.02
    for norm in ("norm", "pre_fc_norm_hidden", "pre_fc_norm_embedding"):
        added[f"mtp.{norm}.weight"] = torch.zeros(hidden)
    save_file(weights | added, path, metadata={"format": "pt"})
    return sorted(added)


def sft_warmup(
    model: torch.nn.Module,
    examples: Sequence[tuple[list[int], list[int]]],
    tiny: TinyModelConfig,
    pad_id: int,
) -> list[float]:
    """Next-token cross-entropy on mask==1 tokens, for model.tiny's warm-up steps at
    its batch size and learning rate; returns the loss per step."""
    rng = random.Random(tiny.seed)
    torch.manual_seed(tiny.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tiny.warmup_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _cosine_with_warmup(step, SFT_LR_WARMUP_STEPS, tiny.warmup_steps)
    )
    model.train()
    losses: list[float] = []
    for step in range(tiny.warmup_steps):
        batch = rng.sample(list(examples), min(tiny.warmup_batch_size, len(examples)))
        ids, mask = _pad(batch, pad_id)
        logits = model(input_ids=ids, attention_mask=(mask >= 0).long()).logits[:, :-1]
        targets = ids[:, 1:]
        weights = (mask[:, 1:] > 0).float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        )
        loss = (nll * weights.reshape(-1)).sum() / weights.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == tiny.warmup_steps - 1:
            log.info("warm-up step %d/%d loss %.4f", step + 1, tiny.warmup_steps, losses[-1])
    model.eval()
    return losses


def _pad(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pads ids with `pad_id` and masks with -1 (marks padding)."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.full((len(batch), width), -1, dtype=torch.long)
    for row, (seq, seq_mask) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = torch.tensor(seq_mask)
    return ids, mask


def _cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
