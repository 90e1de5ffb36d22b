"""What every algorithm shares: the Algorithm protocol and its inputs.

An algorithm turns a group's rewards into advantages and per-token policy
losses into one differentiable number; the learner is blind to everything
else. Inputs are flat over the generated tokens of a micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class PolicyInputs:
    logprobs: torch.Tensor
    """[N] the current policy's logprobs of the generated tokens (with grad)."""
    behavior_logprobs: torch.Tensor
    """[N] the engine's logprobs of the same tokens when it sampled them."""
    advantages: torch.Tensor
    """[N] each token's advantage (its sequence's, broadcast)."""
    weights: torch.Tensor
    """[N] aggregation weights: sum(weights * loss) over the whole batch is the loss."""
    entropy: torch.Tensor | None = None
    """[N] the current policy's entropy at each position (no grad needed)."""


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    """Scalar: this micro-batch's share of the batch loss."""
    stats: dict[str, torch.Tensor]
    """Per-token statistics ([N]) the learner averages into metrics."""


class Algorithm(Protocol):
    name: str

    def advantages(self, rewards: list[float]) -> list[float]:
        """One advantage per sample of a group."""
        ...

    def loss(self, inputs: PolicyInputs) -> PolicyLoss: ...


def group_normalized(rewards: list[float], normalize_std: bool, eps: float = 1e-6) -> list[float]:
    """Rewards centred on the group mean, optionally divided by the group std."""
    values = torch.tensor(rewards, dtype=torch.float64)
    centred = values - values.mean()
    if normalize_std:
        centred = centred / (values.std(unbiased=False) + eps)
    return [float(v) for v in centred]


def token_mean_weights(num_tokens: int) -> float:
    """Per-token weight so that summing weighted losses gives the batch token mean."""
    return 1.0 / max(1, num_tokens)
