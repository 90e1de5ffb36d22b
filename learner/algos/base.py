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

from core.config import AdvantageStd, AlgoConfig, LossAggregation, OffPolicy
from core.types import Trajectory


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
    """[N] the current policy's entropy at each position (with grad when the
    algorithm has an entropy bonus)."""
    sequence_ids: torch.Tensor | None = None
    """[N] which sequence of the micro-batch each token belongs to (sequence-level
    ratios need it; None means one sequence)."""
    reference_logprobs: torch.Tensor | None = None
    """[N] the reference policy's logprobs (with algo.kl_coef > 0)."""
    kept_scale: float = 1.0
    """All loss tokens / kept loss tokens of the whole batch (MIS with token-mean:
    masked tokens leave the denominator; the learner counts them beforehand)."""


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    """Scalar: this micro-batch's share of the batch loss."""
    stats: dict[str, torch.Tensor]
    """Per-token statistics ([N]) the learner averages into metrics."""


class Algorithm(Protocol):
    name: str
    loss_agg: str
    entropy_coef: float

    def shaped_reward(self, trajectory: Trajectory) -> float:
        """The reward that enters the advantages (the env's, reshaped or not)."""
        ...

    def advantages(self, rewards: list[float]) -> list[float]:
        """One advantage per sample of a group."""
        ...

    @property
    def masks_tokens(self) -> bool: ...

    def kept(self, logprobs: torch.Tensor, behavior_logprobs: torch.Tensor) -> torch.Tensor: ...

    def loss(self, inputs: PolicyInputs) -> PolicyLoss: ...


class ClippedSurrogate:
    """-min(r A, clip(r, 1-eps_low, 1+eps_high) A) per token, capped at -c A for
    A < 0 (dual-clip), with log r clamped before exp, corrected for the behavior
    policy and aggregated by the batch weights. Subclasses choose the advantages,
    the ratio's granularity and their defaults."""

    name = ""
    default_clip: tuple[float, float] = (0.2, 0.2)
    default_agg = "token-mean"

    def __init__(self, cfg: AlgoConfig):
        low, high = self.default_clip
        self.clip_low = low if cfg.clip_eps is None else cfg.clip_eps
        self.clip_high = high if cfg.clip_eps_high is None else cfg.clip_eps_high
        self.clip_ratio_c = cfg.clip_ratio_c
        self.log_ratio_clamp = cfg.log_ratio_clamp
        self.normalize_std = cfg.normalize_std
        self.adv_std = AdvantageStd(cfg.adv_std)
        self.entropy_coef = cfg.entropy_coef
        self.loss_agg = cfg.loss_agg or self.default_agg
        self.off_policy = cfg.off_policy
        self.is_cap = cfg.is_cap
        self.kl_coef = cfg.kl_coef
        self.overlong = OverlongShaping.from_config(cfg)

    @property
    def masks_tokens(self) -> bool:
        """Whether the loss drops tokens it decides on in the forward pass (MIS), so
        the learner must count the kept ones before it can weight them."""
        return self.off_policy == OffPolicy.mis

    def shaped_reward(self, trajectory: Trajectory) -> float:
        """The reward the advantages see: the env's, less the overlong penalty."""
        return trajectory.reward - self.overlong.penalty(trajectory)

    def advantages(self, rewards: list[float]) -> list[float]:
        return group_normalized(rewards, self.normalize_std, self.adv_std)

    def ratio(self, log_ratio: torch.Tensor, inputs: PolicyInputs) -> torch.Tensor:
        """Per-token ratio (token-level algorithms); GSPO overrides."""
        return torch.exp(log_ratio)

    def loss(self, inputs: PolicyInputs) -> PolicyLoss:
        decoupled = self.off_policy != OffPolicy.behavior
        reference = inputs.logprobs.detach() if decoupled else inputs.behavior_logprobs
        log_ratio = torch.clamp(
            inputs.logprobs - reference, -self.log_ratio_clamp, self.log_ratio_clamp
        )
        ratio = self.ratio(log_ratio, inputs)
        adv = inputs.advantages
        unclipped = -ratio * adv
        clipped = -torch.clamp(ratio, 1 - self.clip_low, 1 + self.clip_high) * adv
        surrogate = torch.maximum(unclipped, clipped)
        dual_clipped = torch.zeros_like(surrogate, dtype=torch.bool)
        if self.clip_ratio_c is not None:
            # Dual-clip: with A < 0 the loss -rA grows without bound in r; cap it at -cA.
            cap = -self.clip_ratio_c * adv
            dual_clipped = (adv < 0) & (surrogate > cap)
            surrogate = torch.where(dual_clipped, cap, surrogate)
        is_weight, kept = self._behavior_weight(inputs) if decoupled else (1.0, None)
        per_token = surrogate * is_weight
        if self.entropy_coef and inputs.entropy is not None:
            per_token = per_token - self.entropy_coef * inputs.entropy
        kl_reference = None
        if self.kl_coef and inputs.reference_logprobs is not None:
            # k3 estimate of KL(current || reference) under the sampled tokens
            log_ratio_ref = inputs.reference_logprobs - inputs.logprobs
            kl_reference = torch.expm1(log_ratio_ref) - log_ratio_ref
            per_token = per_token + self.kl_coef * kl_reference
        weights = inputs.weights
        if kept is not None:
            weights = kept_token_weights(
                weights, kept, inputs.sequence_ids, self.loss_agg, inputs.kept_scale
            )
        loss = (per_token * weights).sum()
        with torch.no_grad():
            behavior_log_ratio = inputs.logprobs.detach() - inputs.behavior_logprobs
            stats = {
                "ratio": ratio.detach(),
                "clipped": (clipped > unclipped).to(ratio.dtype),
                "dual_clipped": dual_clipped.to(ratio.dtype),
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

    def kept(self, logprobs: torch.Tensor, behavior_logprobs: torch.Tensor) -> torch.Tensor:
        """Which tokens the loss keeps (all but MIS's masked ones), as a bool tensor."""
        if not self.masks_tokens:
            return torch.ones_like(logprobs, dtype=torch.bool)
        weight = torch.exp(logprobs - behavior_logprobs)
        return (weight <= self.is_cap) & (weight >= 1 / self.is_cap)

    def _behavior_weight(self, inputs: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """pi_proximal / pi_behavior per token, truncated (tis) or masked (mis); and
        which tokens stay in the loss."""
        weight = torch.exp(inputs.logprobs.detach() - inputs.behavior_logprobs)
        if self.off_policy == OffPolicy.tis:
            return weight.clamp(max=self.is_cap), torch.ones_like(weight, dtype=torch.bool)
        kept = self.kept(inputs.logprobs.detach(), inputs.behavior_logprobs)
        return weight * kept, kept


@dataclass(frozen=True)
class OverlongShaping:
    """DAPO's soft overlong punishment on a trajectory's longest turn: 0 up to
    max_tokens - buffer, then linear to `max_penalty` at max_tokens (and beyond).
    The longest turn, not the sum over turns: a turn is what hits the engine's
    per-turn token limit, and a multi-turn episode may be long in total by design."""

    buffer: int = 0
    max_penalty: float = 1.0
    max_tokens: int | None = None

    @classmethod
    def from_config(cls, cfg: AlgoConfig) -> OverlongShaping:
        return cls(cfg.overlong_buffer, cfg.overlong_penalty, cfg.overlong_max_tokens)

    def penalty_for(self, length: int) -> float:
        if self.buffer <= 0 or self.max_tokens is None:
            return 0.0
        excess = length - (self.max_tokens - self.buffer)
        return self.max_penalty * min(1.0, max(0.0, excess / self.buffer))

    def penalty(self, trajectory: Trajectory) -> float:
        longest = max((turn.num_generated for turn in trajectory.turns), default=0)
        return self.penalty_for(longest or trajectory.num_generated)


def group_normalized(
    rewards: list[float],
    normalize_std: bool,
    std: AdvantageStd = AdvantageStd.sample,
    eps: float = 1e-6,
) -> list[float]:
    """Rewards centred on the group mean, optionally divided by the group's sample
    (n-1) or population (n) std plus eps."""
    values = torch.tensor(rewards, dtype=torch.float64)
    centred = values - values.mean()
    if normalize_std and len(rewards) > 1:
        spread = values.std(unbiased=AdvantageStd(std) == AdvantageStd.sample)
        centred = centred / (spread + eps)
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
    if mode not in tuple(LossAggregation):
        raise ValueError(f"loss aggregation {mode!r} is not one of {', '.join(LossAggregation)}")
    sequences = max(1, len(lengths))
    if mode == "token-mean":
        return [1.0 / max(1, sum(lengths))] * len(lengths)
    if mode == "seq-mean-token-mean":
        return [1.0 / (sequences * max(1, n)) for n in lengths]
    return [1.0 / sequences] * len(lengths)


def kept_token_weights(
    weights: torch.Tensor,
    kept: torch.Tensor,
    sequence_ids: torch.Tensor | None,
    loss_agg: str,
    batch_scale: float = 1.0,
) -> torch.Tensor:
    """Aggregation weights ([N]) with masked tokens (kept = False) taken out of the
    denominators: token-mean divides by the batch's kept tokens (`batch_scale` =
    all tokens / kept tokens of the whole batch, counted beforehand by the learner),
    seq-mean-token-mean by each sequence's kept tokens, seq-mean-token-sum by
    nothing (only the masked terms go)."""
    keep = kept.to(weights.dtype)
    if loss_agg == "token-mean":
        return weights * keep * batch_scale
    if loss_agg == "seq-mean-token-mean":
        ids = torch.zeros_like(kept, dtype=torch.long) if sequence_ids is None else sequence_ids
        count = int(ids.max()) + 1 if ids.numel() else 0
        counts = torch.zeros(count, dtype=weights.dtype)
        all_tokens = counts.index_add(0, ids, torch.ones_like(keep))
        kept_tokens = counts.index_add(0, ids, keep)
        return weights * keep * (all_tokens / kept_tokens.clamp(min=1))[ids]
    return weights * keep
