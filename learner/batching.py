"""From a Batch of groups to padded micro-batches, the same plan on every rank.

Owns: which trajectories are trained on (trainable statuses only), their
advantages (from the algorithm, per group), the loss-aggregation weights over
the whole batch, and the split into micro-batches under a token budget. Every
rank computes the same plan from the same batch and takes every world-th
micro-batch; the plan is padded with empty micro-batches so all ranks run the
same number of forward passes (ZeRO-3 gathers parameters collectively).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from core.types import Batch, RoutedExperts
from learner.algos.base import Algorithm, aggregation_weights
from learner.shared_prefix import Prefixes, prompt_lengths, split_prompts


@dataclass
class Sample:
    tokens: list[int]
    loss_mask: list[int]
    behavior_logprobs: list[float]
    advantage: float
    staleness: int
    weight: float = 0.0
    """Per-token loss weight from the batch's aggregation (set by the plan)."""
    routed_experts: RoutedExperts | None = None
    """Per token, per MoE layer, the experts the engine used (R3), None where unknown."""
    images: list[bytes] = field(default_factory=list)
    """PNG bytes of the images the engine saw, in prompt order (learner.vision)."""


@dataclass
class MicroBatch:
    """Padded samples and, per target token, what the loss needs. Without `prefixes`
    the inputs are whole samples [B, T] and target t is token t + 1 ([B, T-1]); with
    them the inputs are the samples' continuations after their shared prompts [B, S]
    and target j is continuation token j ([B, S])."""

    input_ids: torch.Tensor
    """[B, T] right-padded."""
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    """[B, T-1] float: 1 where target position t+1 is a generated token."""
    targets: torch.Tensor
    behavior_logprobs: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor
    """[B, T-1] aggregation weight of each target token (0 off the mask)."""
    routing: torch.Tensor | None = None
    """[B, T, layers, k] the engine's experts for each input position (R3)."""
    routing_mask: torch.Tensor | None = None
    """[B, T] where `routing` is known: every position of a sample the engine reported."""
    prefixes: Prefixes | None = None
    """The distinct prompts the samples continue (learner.shared_prefix), if shared."""
    images: list[list[bytes]] | None = None
    """Each sample's images (PNG bytes), when any sample has some (learner.vision)."""

    @property
    def num_tokens(self) -> int:
        return int(self.loss_mask.sum())

    @property
    def forward_tokens(self) -> int:
        """Positions the model computes for this micro-batch, padding included."""
        shared = 0 if self.prefixes is None else self.prefixes.ids.numel()
        return self.input_ids.numel() + shared


def collect_samples(batch: Batch, algorithm: Algorithm) -> list[Sample]:
    samples: list[Sample] = []
    for group in batch.groups:
        members = [t for t in group.trajectories if t.status.trainable and t.num_generated]
        if len(members) < 2:
            continue  # a lone sample has no group baseline
        advantages = algorithm.advantages([algorithm.shaped_reward(t) for t in members])
        for traj, advantage in zip(members, advantages, strict=True):
            samples.append(
                Sample(
                    tokens=traj.tokens,
                    loss_mask=traj.loss_mask,
                    behavior_logprobs=traj.behavior_logprobs,
                    advantage=advantage,
                    staleness=traj.staleness(batch.learner_version),
                    routed_experts=traj.routed_experts,
                    images=list(traj.images),
                )
            )
    return samples


def plan_micro_batches(
    samples: list[Sample],
    token_budget: int,
    world_size: int,
    pad_id: int,
    loss_agg: str = "token-mean",
    share_prefix: bool = False,
) -> list[MicroBatch | None]:
    """Micro-batches whose padded size stays within `token_budget`, sorted by
    length; the list length is a multiple of `world_size` (None = empty slot).
    Token weights follow `loss_agg` over the whole batch, so the sum over all
    micro-batches (and ranks) is the batch loss. `share_prefix`: see `collate`."""
    lengths = [sum(s.loss_mask) for s in samples]
    for sample, weight in zip(samples, aggregation_weights(lengths, loss_agg), strict=True):
        sample.weight = weight
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].tokens))
    plan: list[MicroBatch | None] = []
    current: list[Sample] = []
    for index in order:
        sample = samples[index]
        width = max([len(s.tokens) for s in current] + [len(sample.tokens)])
        if current and width * (len(current) + 1) > token_budget:
            plan.append(collate(current, pad_id, share_prefix))
            current = []
        current.append(sample)
    if current:
        plan.append(collate(current, pad_id, share_prefix))
    while len(plan) % world_size:
        plan.append(None)
    return plan


def collate(samples: list[Sample], pad_id: int, share_prefix: bool = False) -> MicroBatch:
    """`samples` as one micro-batch; with `share_prefix`, each distinct prompt once and
    the samples as its continuations (when two share one and none carries routing or
    images: a shared prompt's forward would need its pixels too)."""
    tokens = [s.tokens for s in samples]
    routed = any(s.routed_experts is not None for s in samples)
    with_images = any(s.images for s in samples)
    lengths = prompt_lengths(tokens, [s.loss_mask for s in samples]) if share_prefix else None
    if lengths is None or routed or with_images:
        whole = _padded(samples, [0] * len(samples), pad_id, shift=1)
        whole.images = [list(s.images) for s in samples] if with_images else None
        return whole
    shared = _padded(samples, lengths, pad_id, shift=0)
    shared.prefixes = split_prompts(tokens, lengths, pad_id)
    return shared


def _padded(samples: list[Sample], starts: list[int], pad_id: int, shift: int) -> MicroBatch:
    """Each sample from `starts[i]` on, right-padded; the per-token fields of the
    targets, which are the inputs shifted left by `shift` (1: whole samples, each
    position predicts the next; 0: continuations, predicted from one position back)."""
    pieces = [s.tokens[start:] for s, start in zip(samples, starts, strict=True)]
    width = max(len(p) for p in pieces)
    rows = len(samples)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.float32)
    behavior = torch.zeros((rows, width), dtype=torch.float32)
    advantages = torch.zeros((rows, width), dtype=torch.float32)
    weights = torch.zeros((rows, width), dtype=torch.float32)
    for row, (sample, start) in enumerate(zip(samples, starts, strict=True)):
        n = len(sample.tokens) - start
        ids[row, :n] = torch.tensor(sample.tokens[start:])
        attention[row, :n] = 1
        mask[row, :n] = torch.tensor(sample.loss_mask[start:], dtype=torch.float32)
        behavior[row, :n] = torch.tensor(sample.behavior_logprobs[start:], dtype=torch.float32)
        advantages[row, :n] = sample.advantage
        weights[row, :n] = sample.weight
    target_mask = mask[:, shift:]
    routing, routing_mask = collate_routing(samples, width) if shift else (None, None)
    return MicroBatch(
        input_ids=ids,
        attention_mask=attention,
        loss_mask=target_mask,
        targets=ids[:, shift:],
        behavior_logprobs=behavior[:, shift:],
        advantages=advantages[:, shift:],
        weights=target_mask * weights[:, shift:],
        routing=routing,
        routing_mask=routing_mask,
    )


def collate_routing(
    samples: list[Sample], width: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The engine's experts at every position whose routing is known, and that mask
    ([B, T, layers, k], [B, T]; None when no sample carries routing).

    Every known position is replayed, prompt and observation positions included:
    through attention each position's hidden state feeds the logits of every later
    one, so a position left to the learner's own router changes the loss of the
    generated tokens after it. Unknown positions (the last token, padding) route
    themselves."""
    carrying = [s.routed_experts for s in samples if s.routed_experts is not None]
    if not carrying:
        return None, None
    layers, k = carrying[0].num_layers, carrying[0].top_k
    routing = torch.zeros((len(samples), width, layers, k), dtype=torch.long)
    known = torch.zeros((len(samples), width), dtype=torch.bool)
    for row, sample in enumerate(samples):
        routed = sample.routed_experts
        if routed is None:
            continue
        if (routed.num_layers, routed.top_k) != (layers, k):
            raise ValueError(
                f"routing of {routed.num_layers} layers x top-{routed.top_k} beside "
                f"{layers} x top-{k} in one micro-batch"
            )
        if len(routed.rows) != len(sample.tokens):
            raise ValueError(f"{len(routed.rows)} routing rows for {len(sample.tokens)} tokens")
        positions = routed.known
        if not positions:
            continue
        data = b"".join(routed.rows[i] for i in positions)
        experts = np.frombuffer(data, dtype=routed.dtype).reshape(len(positions), layers, k)
        routing[row, positions] = torch.from_numpy(experts.astype(np.int64))
        known[row, positions] = True
    return routing, known
