"""Ledger: every trajectory of a run, accounted for exactly once.

A trajectory is `in_flight` from the moment its group starts, then exactly one
of: `buffered` (admitted, waiting), `trained` (handed to the learner; with
`buffer.replay_ratio` k, up to k times), or a terminal reason it never will
be: `failed` (environment fault or abort, with the reason), `rerun` (a sibling
failed and the whole group was run again, env.rerun_failed_groups),
`dropped_stale`, `filtered` (DAPO zero-variance group) or `evicted`. Moves follow the allowed
transitions only; anything else (a trajectory arriving twice, trained beyond
the replay ratio) raises, because a double count is a bug, not a metric. A
group still in flight at a checkpoint is re-run after a resume, so
in_flight -> in_flight is allowed.

The balance: produced == the sum over all states.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from core.types import Group

TRANSITIONS: dict[str | None, set[str]] = {
    None: {"in_flight"},
    "in_flight": {"in_flight", "buffered", "failed", "rerun", "dropped_stale", "filtered"},
    "buffered": {"trained", "dropped_stale", "evicted"},
    "trained": {"trained"},
}
STATES = (
    "in_flight",
    "buffered",
    "trained",
    "failed",
    "rerun",
    "dropped_stale",
    "filtered",
    "evicted",
)


class LedgerError(RuntimeError):
    """A trajectory was counted twice or moved where it cannot go."""


class Ledger:
    def __init__(self, replay_ratio: int = 1):
        self.replay_ratio = replay_ratio
        self.states: dict[str, str] = {}
        self.times_trained: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def started(self, group_id: str, size: int) -> None:
        for index in range(size):
            self._move(f"{group_id}/{index}", "in_flight")

    def arrived(self, group: Group) -> None:
        """Record the group's failed trajectories; the rest wait for the buffer's word."""
        for trajectory in group.trajectories:
            if not trajectory.status.trainable:
                self._move(trajectory.trajectory_id, "failed")
                self.failures[trajectory.failure or trajectory.status.value] += 1

    def rerun(self, group: Group) -> None:
        """The group is set aside for a re-run: its surviving members are not trained."""
        self._move_trainable(group, "rerun")

    def buffered(self, group: Group) -> None:
        self._move_trainable(group, "buffered")

    def left(self, group: Group, reason: str) -> None:
        """The buffer let the group go (`reason` from ReplayBuffer): trained
        trajectories stay trained, the others take the reason."""
        if reason == "retired":
            return
        self._move_trainable(group, reason)

    def trained(self, groups: list[Group]) -> None:
        for group in groups:
            self._move_trainable(group, "trained")
            for trajectory in group.trajectories:
                if trajectory.status.trainable:
                    self.times_trained[trajectory.trajectory_id] += 1
                    if self.times_trained[trajectory.trajectory_id] > self.replay_ratio:
                        raise LedgerError(
                            f"{trajectory.trajectory_id} trained more than "
                            f"buffer.replay_ratio={self.replay_ratio} times"
                        )

    def counts(self) -> dict[str, int]:
        tally = Counter(self.states.values())
        return {state: tally.get(state, 0) for state in STATES}

    def stats(self) -> dict[str, float]:
        counts = self.counts()
        metrics = {f"ledger/{state}": float(n) for state, n in counts.items()}
        metrics["ledger/produced"] = float(len(self.states))
        metrics["ledger/balanced"] = float(sum(counts.values()) == len(self.states))
        metrics["ledger/trained_more_than_once"] = float(
            sum(1 for n in self.times_trained.values() if n > 1)
        )
        return metrics

    def state(self) -> dict[str, Any]:
        return {
            "states": dict(self.states),
            "times_trained": dict(self.times_trained),
            "failures": dict(self.failures),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.states = dict(state.get("states", {}))
        self.times_trained = Counter(state.get("times_trained", {}))
        self.failures = Counter(state.get("failures", {}))

    def _move_trainable(self, group: Group, to: str) -> None:
        for trajectory in group.trajectories:
            if trajectory.status.trainable:
                self._move(trajectory.trajectory_id, to)

    def _move(self, trajectory_id: str, to: str) -> None:
        current = self.states.get(trajectory_id)
        if to not in TRANSITIONS.get(current, set()):
            raise LedgerError(f"{trajectory_id}: cannot go from {current or 'nowhere'} to {to}")
        self.states[trajectory_id] = to
