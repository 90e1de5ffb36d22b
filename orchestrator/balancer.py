"""Balancer: how many groups may be in flight, adapted every step (AIMD).

The staleness gate is a hard bound on what may start; within it the balancer
keeps the buffer near its target without feeding the learner stale work:
- the learner waited for its batch (rollouts too slow), no group that arrived at
  or past the staleness bound was dropped, and the engines are not saturated: add
  `increase` groups (additive increase);
- groups went stale waiting in the buffer, or it holds more than `target_batches`
  batches (rollouts run ahead of the learner): multiply by `decrease`
  (multiplicative decrease);
- otherwise hold. A group that arrives at or past the bound is the slow tail (it
  waits for its slowest episode while versions pass), not over-production: a
  smaller window would starve the learner further without shortening the tail, so
  it only stops the increase. Measured on the long-tail calculator workload
  (bench.async_vs_sync's, `max_staleness=4`): shrinking on every stale drop kept
  the limit at 8-20 of the gate's 40 and the learner waiting ~1 s a step.
The limit stays within [groups_per_batch, max_in_flight]. Balancing *across*
rollout workers is the router's: placing by outstanding tokens sends new work
to whichever worker drains fastest, so a slower worker gets less.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import BalancerConfig


@dataclass(frozen=True)
class Observation:
    learner_wait_s: float
    """How long the learner waited for this step's batch."""
    buffered_groups: int
    expired_total: int
    """Groups that went stale waiting in the buffer, since the run began (the balancer
    takes the change)."""
    late_total: int
    """Groups dropped as stale that arrived at or past the bound, since the run began
    (the buffer's arrived_stale)."""
    queue_depth: float
    """Requests waiting or running per rollout worker (mean)."""


class Balancer:
    def __init__(self, cfg: BalancerConfig, groups_per_batch: int, gate_width: int):
        self.cfg = cfg
        self.groups_per_batch = groups_per_batch
        self.max_in_flight = max(groups_per_batch, min(cfg.max_in_flight, gate_width))
        self.limit = float(self.max_in_flight)
        self.last_decision = "hold"
        self._seen = (0, 0)

    @property
    def in_flight_limit(self) -> int:
        return int(self.limit)

    def update(self, seen: Observation) -> str:
        """Adapt the limit to one step's observation; returns the decision."""
        overfull = seen.buffered_groups > self.cfg.target_batches * self.groups_per_batch
        starved = seen.learner_wait_s > self.cfg.starve_s
        saturated = seen.queue_depth > self.cfg.max_queue_depth
        expired = seen.expired_total > self._seen[0]
        late = seen.late_total > self._seen[1]
        self._seen = (seen.expired_total, seen.late_total)
        if expired or overfull:
            self.limit = max(self.groups_per_batch, self.limit * self.cfg.decrease)
            decision = "decrease"
        elif starved and not saturated and not late:
            self.limit = min(self.max_in_flight, self.limit + self.cfg.increase)
            decision = "increase"
        else:
            decision = "hold"
        self.last_decision = decision
        return decision

    def stats(self) -> dict[str, float]:
        return {
            "balancer/in_flight_limit": float(self.in_flight_limit),
            "balancer/increase": float(self.last_decision == "increase"),
            "balancer/decrease": float(self.last_decision == "decrease"),
        }
