"""PPO-clip without a critic: the clipped surrogate with a leave-one-out group
baseline (each sample's reward minus the mean of its group's others), so the
advantage is an unbiased estimate without a value model."""

from __future__ import annotations

from learner.algos.base import ClippedSurrogate, leave_one_out


class PPO(ClippedSurrogate):
    name = "ppo"

    def advantages(self, rewards: list[float]) -> list[float]:
        return leave_one_out(rewards)
