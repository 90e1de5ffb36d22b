"""What every algorithm shares: its inputs, the clipped surrogate, off-policy
correction and loss aggregation.

An algorithm turns a group's rewards into advantages and per-token policy
losses into one differentiable number; the learner is blind to everything
else. Inputs are flat over the generated tokens of a micro-batch.

Off-policy correction (`algo.off_policy`):
- `behavior`: the ratio is pi_theta / pi_behavior, the engine's own logprobs
  being the "old" policy (one step of clipped PPO against what sampled);
- `tis` / `mis`: decoupled PPO. The ratio is pi_theta / pi_proximal, where the
  proximal policy is the learner's weights before this update, and every token
  is weighted by pi_proximal / pi_behavior, truncated at `is_cap` (tis) or
  masked outside [1/is_cap, is_cap] (mis). The learner makes one optimizer
  step per batch, so pi_proximal is exactly the current forward pass, detached:
  no extra forward is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from core.config import AlgoConfig

LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


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
    sequence_ids: torch.Tensor | None = None
    """[N] which sequence of the micro-batch each token belongs to (sequence-level
    ratios need it; None means one sequence)."""
    reference_logprobs: torch.Tensor | None = None
    """[N] the reference policy's logprobs (with algo.kl_coef > 0)."""


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    """Scalar: this micro-batch's share of the batch loss."""
    stats: dict[str, torch.Tensor]
    """Per-token statistics ([N]) the learner averages into metrics."""


class Algorithm(Protocol):
    name: str
    loss_agg: str

    def advantages(self, rewards: list[float]) -> list[float]:
        """One advantage per sample of a group."""
        ...

    def loss(self, inputs: PolicyInputs) -> PolicyLoss: ...


class ClippedSurrogate:
    """-min(r A, clip(r, 1-eps_low, 1+eps_high) A) per token, corrected for the
    behavior policy and aggregated by the batch weights. Subclasses choose the
    advantages, the ratio's granularity and their defaults."""

    name = ""
    default_clip: tuple[float, float] = (0.2, 0.2)
    default_agg = "token-mean"

    def __init__(self, cfg: AlgoConfig):
        low, high = self.default_clip
        self.clip_low = low if cfg.clip_eps is None else cfg.clip_eps
        self.clip_high = high if cfg.clip_eps_high is None else cfg.clip_eps_high
        if cfg.clip_eps is not None and cfg.clip_eps_high is None:
            self.clip_high = cfg.clip_eps
        self.normalize_std = cfg.normalize_std
        self.entropy_coef = cfg.entropy_coef
        self.loss_agg = cfg.loss_agg or self.default_agg
        self.off_policy = cfg.off_policy
        self.is_cap = cfg.is_cap
        self.kl_coef = cfg.kl_coef

    def advantages(self, rewards: list[float]) -> list[float]:
        return group_normalized(rewards, self.normalize_std)

    def ratio(self, log_ratio: torch.Tensor, inputs: PolicyInputs) -> torch.Tensor:
        """Per-token ratio (token-level algorithms); GSPO overrides."""
        return torch.exp(log_ratio)

    def loss(self, inputs: PolicyInputs) -> PolicyLoss:
        decoupled = self.off_policy != "behavior"
        reference = inputs.logprobs.detach() if decoupled else inputs.behavior_logprobs
        ratio = self.ratio(inputs.logprobs - reference, inputs)
        adv = inputs.advantages
        unclipped = ratio * adv
        clipped = torch.clamp(ratio, 1 - self.clip_low, 1 + self.clip_high) * adv
        is_weight, kept = self._behavior_weight(inputs) if decoupled else (1.0, None)
        per_token = -torch.minimum(unclipped, clipped) * is_weight
        if self.entropy_coef and inputs.entropy is not None:
            per_token = per_token - self.entropy_coef * inputs.entropy
        kl_reference = None
        if self.kl_coef and inputs.reference_logprobs is not None:
            # k3 estimate of KL(current || reference) under the sampled tokens
            log_ratio = inputs.reference_logprobs - inputs.logprobs
            kl_reference = torch.expm1(log_ratio) - log_ratio
            per_token = per_token + self.kl_coef * kl_reference
        loss = (per_token * inputs.weights).sum()
        with torch.no_grad():
            behavior_log_ratio = inputs.logprobs.detach() - inputs.behavior_logprobs
            stats = {
                "ratio": ratio.detach(),
                "clipped": (clipped < unclipped).to(ratio.dtype),
                # k3 estimate of KL(behavior || current), unbiased under behavior samples
                "kl_behavior": torch.expm1(behavior_log_ratio) - behavior_log_ratio,
                "abs_logprob_diff": behavior_log_ratio.abs(),
            }
            if kl_reference is not None:
                stats["kl_reference"] = kl_reference.detach()
            if decoupled:
                stats["is_weight"] = torch.as_tensor(is_weight).detach()
                stats["is_masked"] = (~kept).to(ratio.dtype)
        return PolicyLoss(loss=loss, stats=stats)

    def _behavior_weight(self, inputs: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """pi_proximal / pi_behavior per token, truncated (tis) or masked (mis)."""
        weight = torch.exp(inputs.logprobs.detach() - inputs.behavior_logprobs)
        if self.off_policy == "tis":
            return weight.clamp(max=self.is_cap), torch.ones_like(weight, dtype=torch.bool)
        kept = (weight <= self.is_cap) & (weight >= 1 / self.is_cap)
        return weight * kept, kept


def group_normalized(rewards: list[float], normalize_std: bool, eps: float = 1e-6) -> list[float]:
    """Rewards centred on the group mean, optionally divided by the group std."""
    values = torch.tensor(rewards, dtype=torch.float64)
    centred = values - values.mean()
    if normalize_std:
        centred = centred / (values.std(unbiased=False) + eps)
    return [float(v) for v in centred]


def leave_one_out(rewards: list[float]) -> list[float]:
    """Each reward minus the mean of the others in its group (RLOO baseline)."""
    n = len(rewards)
    if n < 2:
        return [0.0] * n
    total = sum(rewards)
    return [r - (total - r) / (n - 1) for r in rewards]


def aggregation_weights(lengths: list[int], mode: str) -> list[float]:
    """The per-token weight of each sequence so that sum(weight * loss) over the
    batch is its token mean, the mean over sequences of their token means, or the
    mean over sequences of their token sums."""
    if mode not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss aggregation {mode!r} is not one of {LOSS_AGGREGATIONS}")
    sequences = max(1, len(lengths))
    if mode == "token-mean":
        return [1.0 / max(1, sum(lengths))] * len(lengths)
    if mode == "seq-mean-token-mean":
        return [1.0 / (sequences * max(1, n)) for n in lengths]
    return [1.0 / sequences] * len(lengths)
