"""What the control plane does about environments that break.

An episode that failed because of the environment (a tool that crashed or timed
out past its retries, a reward that crashed) or was aborted by the engine is not
the model's doing, so it is never trained on. Two policies sit on top:

- re-run (`env.rerun_failed_groups`): a GRPO group missing members is biased
  (its baseline comes from the episodes that happened to survive), so such a
  group is set aside whole and its task run again, up to `env.max_group_reruns`
  times; its surviving siblings are recorded as `rerun` in the ledger;
- circuit breaker: when more than `env.breaker_failure_rate` of an env's last
  `env.breaker_window` episodes failed, the run stops with one line saying which
  env, how often and the last reason, instead of training on what is left.
"""

from __future__ import annotations

from collections import deque

from core.types import Group, Status


class EnvCircuitOpen(RuntimeError):
    """An environment fails too often for the run to go on."""


def needs_rerun(group: Group) -> bool:
    """Some member did not finish for reasons that are not the model's."""
    return any(t.status in (Status.FAILED, Status.ABORTED) for t in group.trajectories)


class EnvBreaker:
    """Failure rate of each env over its last `window` episodes."""

    def __init__(self, window: int, max_failure_rate: float):
        self.window = window
        self.max_failure_rate = max_failure_rate
        self._recent: dict[str, deque[bool]] = {}
        self._last_reason: dict[str, str] = {}
        self.failures = 0

    def record(self, group: Group) -> None:
        """Count the group's episodes; raise EnvCircuitOpen when the env trips."""
        recent = self._recent.setdefault(group.env_id, deque(maxlen=self.window))
        for trajectory in group.trajectories:
            failed = trajectory.status == Status.FAILED
            recent.append(failed)
            if failed:
                self.failures += 1
                self._last_reason[group.env_id] = trajectory.failure or "unknown"
        if len(recent) == self.window and self.failure_rate(group.env_id) > self.max_failure_rate:
            raise EnvCircuitOpen(
                f"environment {group.env_id} failed {sum(recent)} of its last {self.window} "
                f"episodes (last: {self._last_reason.get(group.env_id)}); stopping the run. "
                "Fix the environment or its tools, or raise env.breaker_failure_rate."
            )

    def failure_rate(self, env_id: str) -> float:
        recent = self._recent.get(env_id)
        return sum(recent) / len(recent) if recent else 0.0

    def stats(self) -> dict[str, float]:
        metrics = {"fault/env_failures": float(self.failures)}
        for env_id in self._recent:
            metrics[f"fault/env_failure_rate/{env_id}"] = self.failure_rate(env_id)
        return metrics
