"""GRPO: group-normalised advantages, token-level clipped policy gradient.

The ratio is taken against the behavior logprobs the engine reported, so
off-policy samples (from older weights, or a numerically different engine)
are corrected and clipped like PPO's.
"""

from __future__ import annotations

import torch

from core.config import AlgoConfig
from learner.algos.base import PolicyInputs, PolicyLoss, group_normalized


class GRPO:
    name = "grpo"

    def __init__(self, cfg: AlgoConfig):
        self.clip_low = cfg.clip_eps
        self.clip_high = cfg.clip_eps if cfg.clip_eps_high is None else cfg.clip_eps_high
        self.normalize_std = cfg.normalize_std
        self.entropy_coef = cfg.entropy_coef

    def advantages(self, rewards: list[float]) -> list[float]:
        return group_normalized(rewards, self.normalize_std)

    def loss(self, inputs: PolicyInputs) -> PolicyLoss:
        log_ratio = inputs.logprobs - inputs.behavior_logprobs
        ratio = torch.exp(log_ratio)
        adv = inputs.advantages
        unclipped = ratio * adv
        clipped = torch.clamp(ratio, 1 - self.clip_low, 1 + self.clip_high) * adv
        per_token = -torch.minimum(unclipped, clipped)
        if self.entropy_coef and inputs.entropy is not None:
            per_token = per_token - self.entropy_coef * inputs.entropy
        loss = (per_token * inputs.weights).sum()
        with torch.no_grad():
            stats = {
                "ratio": ratio.detach(),
                "clipped": (clipped < unclipped).float(),
                # k3 estimate of KL(behavior || current), unbiased under behavior samples
                "kl_behavior": (ratio - 1 - log_ratio).detach(),
                "abs_logprob_diff": log_ratio.abs().detach(),
            }
        return PolicyLoss(loss=loss, stats=stats)
