"""ReplayBuffer: complete groups, served oldest first within the staleness bound.

A group is admitted only if its oldest generated token is at most
`max_staleness` versions behind the learner, and checked again when served
(AReaL-style bound). When full, the oldest group is evicted. Every group that
leaves without being trained on is counted by reason. The learner's version
comes from an injected provider, so the buffer is tested without a learner.
Its state (groups and counts) is saved with every run checkpoint.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.types import Group


@dataclass
class BufferCounts:
    admitted: int = 0
    served: int = 0
    dropped_stale: int = 0
    evicted: int = 0
    served_staleness: Counter = field(default_factory=Counter)


class ReplayBuffer:
    def __init__(self, max_staleness: int, capacity_groups: int, version: Callable[[], int]):
        if capacity_groups < 1:
            raise ValueError("capacity_groups must be >= 1")
        self.max_staleness = max_staleness
        self.capacity = capacity_groups
        self._version = version
        self._groups: deque[Group] = deque()
        self.counts = BufferCounts()

    def __len__(self) -> int:
        return len(self._groups)

    def add(self, group: Group) -> bool:
        """Admit a complete group; False if it is already too stale."""
        if self._too_stale(group):
            self.counts.dropped_stale += 1
            return False
        if len(self._groups) >= self.capacity:
            self._groups.popleft()
            self.counts.evicted += 1
        self._groups.append(group)
        self.counts.admitted += 1
        return True

    def take(self, num_groups: int) -> list[Group] | None:
        """The `num_groups` oldest fresh-enough groups, or None if there are fewer."""
        self._drop_stale()
        if len(self._groups) < num_groups:
            return None
        served = [self._groups.popleft() for _ in range(num_groups)]
        version = self._version()
        for group in served:
            self.counts.served_staleness[group.staleness(version)] += 1
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
            "buffer/evicted": float(counts.evicted),
        }
        for staleness, n in sorted(counts.served_staleness.items()):
            stats[f"buffer/served_staleness_{staleness}"] = float(n)
        return stats

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the waiting groups and the counts."""
        return {"groups": list(self._groups), "counts": self.counts}

    def restore(self, state: dict[str, Any]) -> None:
        self._groups = deque(state["groups"])
        self.counts = state["counts"]

    def _drop_stale(self) -> None:
        fresh = deque(g for g in self._groups if not self._too_stale(g))
        self.counts.dropped_stale += len(self._groups) - len(fresh)
        self._groups = fresh

    def _too_stale(self, group: Group) -> bool:
        return group.staleness(self._version()) > self.max_staleness
