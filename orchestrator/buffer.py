"""ReplayBuffer: complete groups, served oldest first within the staleness bound,
except that groups the next version would make too stale go first.

A group is admitted only if its oldest generated token is at most
`max_staleness` versions behind the learner, and checked again when served
(AReaL-style bound). With `drop_zero_variance` (DAPO's dynamic sampling) a
group whose rewards are all equal is filtered at admission: it carries no
GRPO signal. With `replay_ratio` k a served group goes back in line until it
has been served k times, still within the staleness bound. When full, the
oldest group is evicted. Every group that leaves is reported with its reason
to `on_leave` (the run's ledger): filtered, dropped_stale, evicted, or
retired (served before, then too stale or evicted). The learner's version
comes from an injected provider, so the buffer is tested without a learner.
Its state (groups, serve counts and counts) is saved with every run checkpoint.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.config import BufferConfig
from core.types import Group


@dataclass
class BufferCounts:
    admitted: int = 0
    served: int = 0
    dropped_stale: int = 0
    arrived_stale: int = 0
    """Of dropped_stale, the groups that arrived too stale or at the bound (the slow
    tail: their own generation took the versions), rather than going stale waiting
    in line behind other groups."""
    evicted: int = 0
    filtered: int = 0
    retired: int = 0
    served_staleness: Counter = field(default_factory=Counter)


LeaveFn = Callable[[Group, str], None]


class ReplayBuffer:
    def __init__(
        self,
        max_staleness: int,
        capacity_groups: int,
        version: Callable[[], int],
        replay_ratio: int = 1,
        drop_zero_variance: bool = False,
        on_leave: LeaveFn | None = None,
    ):
        if capacity_groups < 1 or replay_ratio < 1:
            raise ValueError("capacity_groups and replay_ratio must be >= 1")
        self.max_staleness = max_staleness
        self.capacity = capacity_groups
        self.replay_ratio = replay_ratio
        self.drop_zero_variance = drop_zero_variance
        self._version = version
        self._on_leave = on_leave or (lambda group, reason: None)
        self._groups: deque[Group] = deque()
        self._times_served: dict[str, int] = {}
        self._arrived_at_bound: set[str] = set()
        """Groups admitted at the staleness bound: trainable only at this version."""
        self.counts = BufferCounts()

    @classmethod
    def from_config(
        cls, cfg: BufferConfig, version: Callable[[], int], on_leave: LeaveFn | None = None
    ) -> ReplayBuffer:
        return cls(
            cfg.max_staleness,
            cfg.capacity_groups,
            version,
            cfg.replay_ratio,
            cfg.drop_zero_variance,
            on_leave,
        )

    def __len__(self) -> int:
        return len(self._groups)

    def add(self, group: Group) -> bool:
        """Admit a complete group; False if it is too stale or filtered."""
        if self._too_stale(group):
            self.counts.arrived_stale += 1
            self._leave(group, "dropped_stale")
            return False
        if group.staleness(self._version()) >= self.max_staleness:
            self._arrived_at_bound.add(group.group_id)
        if self.drop_zero_variance and len(set(group.rewards)) <= 1:
            self._leave(group, "filtered")
            return False
        if len(self._groups) >= self.capacity:
            self._leave(self._groups.popleft(), "evicted")
        self._groups.append(group)
        self.counts.admitted += 1
        return True

    def take(self, num_groups: int) -> list[Group] | None:
        """The `num_groups` oldest fresh-enough groups, those at the staleness bound
        first, or None if there are fewer. A group served fewer than `replay_ratio`
        times goes back in line."""
        self._drop_stale()
        if len(self._groups) < num_groups:
            return None
        version = self._version()
        self._groups = self._expiring_first(version)
        served = [self._groups.popleft() for _ in range(num_groups)]
        for group in served:
            self._arrived_at_bound.discard(group.group_id)
            self.counts.served_staleness[group.staleness(version)] += 1
            times = self._times_served.get(group.group_id, 0) + 1
            if times < self.replay_ratio:
                self._times_served[group.group_id] = times
                self._groups.append(group)
            else:
                self._times_served.pop(group.group_id, None)
        self.counts.served += len(served)
        return served

    def stats(self) -> dict[str, float]:
        counts = self.counts
        stats = {
            "buffer/groups": float(len(self._groups)),
            "buffer/fill": len(self._groups) / self.capacity,
            "buffer/admitted": float(counts.admitted),
            "buffer/served": float(counts.served),
            "buffer/dropped_stale": float(counts.dropped_stale),
            "buffer/arrived_stale": float(counts.arrived_stale),
            "buffer/evicted": float(counts.evicted),
            "buffer/filtered": float(counts.filtered),
            "buffer/retired": float(counts.retired),
        }
        for staleness, n in sorted(counts.served_staleness.items()):
            stats[f"buffer/served_staleness_{staleness}"] = float(n)
        return stats

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the waiting groups, serve counts and counts."""
        return {
            "groups": list(self._groups),
            "times_served": dict(self._times_served),
            "counts": self.counts,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._groups = deque(state["groups"])
        self._times_served = dict(state.get("times_served", {}))
        self.counts = state["counts"]

    def _expiring_first(self, version: int) -> deque[Group]:
        """The line with the groups at the staleness bound moved to its front (in
        line order): served now they train; left for the next step they would be
        dropped. A straggler arrives near the bound behind fresher groups, and
        first-come order would let it expire while they are served."""
        expiring = [g for g in self._groups if g.staleness(version) >= self.max_staleness]
        if not expiring:
            return self._groups
        return deque(
            expiring + [g for g in self._groups if g.staleness(version) < self.max_staleness]
        )

    def _drop_stale(self) -> None:
        fresh: deque[Group] = deque()
        for group in self._groups:
            if self._too_stale(group):
                self._leave(group, "dropped_stale")
            else:
                fresh.append(group)
        self._groups = fresh

    def _leave(self, group: Group, reason: str) -> None:
        """A group leaves the buffer for good; one that was served is `retired`."""
        if group.group_id in self._arrived_at_bound:
            self._arrived_at_bound.discard(group.group_id)
            self.counts.arrived_stale += reason == "dropped_stale"
        if self._times_served.pop(group.group_id, 0) and reason != "filtered":
            reason = "retired"
        setattr(self.counts, reason, getattr(self.counts, reason) + 1)
        self._on_leave(group, reason)

    def _too_stale(self, group: Group) -> bool:
        return group.staleness(self._version()) > self.max_staleness
