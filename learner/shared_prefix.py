"""Shared prompts computed once: the layout and the forward pass of a micro-batch
whose samples share their prompt (a GRPO group: every sample starts from the same
prompt tokens).

Owns which samples share (the tokens before a sample's first generated token are
its prompt; samples with equal prompts share one), the split of each sample into
prompt and continuation, and `forward_logits`: the logits that predict every
target token of a micro-batch, computed over each distinct prompt once and over
each continuation attending to its prompt's keys and values (a key/value cache
that keeps its gradient). The result is the unshared forward pass's, to float
rounding: same tokens, same positions, same attention; the prompt's gradient is
the sum over the samples that share it, which is what backpropagating through a
repeated cache computes. With 8 samples of 20 tokens on a 52-token prompt the
learner forwards 3.4k positions instead of 9.2k.

The continuation of sample i starts at its prompt length P_i; target j of it is
token P_i + j, predicted by position P_i + j - 1: the prompt's last position for
j = 0, the continuation's position j - 1 after that.

Not shared: MoE routing replay (its routing is per sample and position) and models
whose cache is not plain full attention (sliding windows, linear attention: their
state depends on padding); `supports_shared_prefix` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Prefixes:
    """The distinct prompts of a micro-batch, right-padded, and whose each row is."""

    ids: torch.Tensor
    """[G, P] the distinct prompts."""
    mask: torch.Tensor
    """[G, P] 1 on prompt tokens, 0 on padding."""
    row: torch.Tensor
    """[B] the prompt of each sample (an index into `ids`)."""

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)


def prompt_lengths(tokens: list[list[int]], loss_masks: list[list[int]]) -> list[int] | None:
    """Per sample, how many leading tokens it shares as its prompt: the tokens before
    its first trained token, leaving at least one token to continue with. None when
    sharing gains nothing (no two samples share a prompt) or cannot work (a sample
    with no prompt token)."""
    lengths = []
    for ids, mask in zip(tokens, loss_masks, strict=True):
        first = next((i for i, m in enumerate(mask) if m), len(ids))
        lengths.append(min(first, len(ids) - 1))
    if min(lengths, default=0) < 1:
        return None
    prompts = {tuple(ids[:n]) for ids, n in zip(tokens, lengths, strict=True)}
    return lengths if len(prompts) < len(tokens) else None


def split_prompts(tokens: list[list[int]], lengths: list[int], pad_id: int) -> Prefixes:
    """The distinct prompts of `tokens` (each sample's first `lengths` tokens)."""
    index: dict[tuple[int, ...], int] = {}
    row = [
        index.setdefault(tuple(ids[:n]), len(index)) for ids, n in zip(tokens, lengths, strict=True)
    ]
    width = max(len(p) for p in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for prompt, g in index.items():
        ids[g, : len(prompt)] = torch.tensor(prompt)
        mask[g, : len(prompt)] = 1
    return Prefixes(ids, mask, torch.tensor(row, dtype=torch.long))


def forward_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefixes: Prefixes | None,
    inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, T, V] the logits that predict each target of the micro-batch: without
    `prefixes`, position t predicts token t + 1 of `input_ids` (T = width - 1); with
    them, `input_ids` are the continuations and position j predicts continuation
    token j (T = width). `inputs_embeds`: the whole samples' embeddings to use instead
    of the ids' (images merged in: learner.vision), never with prefixes."""
    if prefixes is None:
        tokens = (
            {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
        )
        out = model(**tokens, attention_mask=attention_mask, use_cache=False)
        return out.logits[:, :-1]
    prompt = model(input_ids=prefixes.ids, attention_mask=prefixes.mask, use_cache=True)
    cache = prompt.past_key_values
    cache.batch_select_indices(prefixes.row)  # each sample's copy; gradients flow back
    lengths = prefixes.lengths
    start = lengths[prefixes.row]
    positions = start[:, None] + torch.arange(input_ids.shape[1])[None, :]
    continuation = model(
        input_ids=input_ids,
        attention_mask=torch.cat([prefixes.mask[prefixes.row], attention_mask], dim=1),
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).logits
    last = prompt.logits[torch.arange(len(lengths)), lengths - 1][prefixes.row]
    return torch.cat([last[:, None, :], continuation[:, :-1]], dim=1)


def supports_shared_prefix(model: torch.nn.Module) -> bool:
    """Whether every layer attends fully over a plain key/value cache (a prompt's keys
    and values then do not depend on what follows them or on padding)."""
    config = getattr(model, "config", None)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return set(layer_types) == {"full_attention"} and not getattr(config, "sliding_window", None)
