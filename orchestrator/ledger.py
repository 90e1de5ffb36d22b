"""Ledger: every trajectory of a run, accounted for exactly once.

A trajectory is `in_flight` from the moment its group starts, then exactly one
of: `buffered` (admitted, waiting), `trained` (handed to the learner; with
`buffer.replay_ratio` k, up to k times), or a terminal reason it never will
be: `failed` (environment fault or abort, with the reason), `rerun` (a sibling
failed and the whole group was run again, env.rerun_failed_groups), `lost`
(its group passed supervisor.group_deadline_s or came back with other members
than were issued; its task was run again), `dropped_stale`, `filtered` (DAPO
zero-variance group) or `evicted`. Moves follow the allowed transitions only;
anything else (a trajectory arriving twice, trained beyond the replay ratio)
raises, because a double count is a bug, not a metric. A group still in flight
at a checkpoint, or on an env pool that died, is re-run under the same ids, so
in_flight -> in_flight is allowed.

The ledger cannot vouch for itself: `audit` checks it against records it does
not keep, the producer's. The producer issues every trajectory id and knows
which groups it awaits or has queued; a trajectory is unaccounted when it was
issued and the ledger never heard of it, the ledger holds it but it was never
issued, or it is in flight while nobody will ever bring its group back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.types import Group

TRANSITIONS: dict[str | None, set[str]] = {
    None: {"in_flight"},
    "in_flight": {"in_flight", "buffered", "failed", "rerun", "lost", "dropped_stale", "filtered"},
    "buffered": {"trained", "dropped_stale", "evicted"},
    "trained": {"trained"},
}
STATES = (
    "in_flight",
    "buffered",
    "trained",
    "failed",
    "rerun",
    "lost",
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

    def started(self, trajectory_ids: Iterable[str]) -> None:
        """A group starts (or starts again) with these ids, as the producer issued them."""
        for trajectory_id in trajectory_ids:
            self._move(trajectory_id, "in_flight")

    def lost(self, trajectory_ids: Iterable[str]) -> None:
        """A group in flight will never be trained: it was declared lost (deadline
        passed, members missing or extra) and its task is run again under new ids."""
        for trajectory_id in trajectory_ids:
            self._move(trajectory_id, "lost")

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


@dataclass(frozen=True)
class Audit:
    """The ledger checked against the producer's own records (`audit`)."""

    never_recorded: tuple[str, ...] = ()
    """Issued by the producer, in no ledger state."""
    never_issued: tuple[str, ...] = ()
    """In the ledger, never issued (an extra member that slipped in)."""
    orphaned: tuple[str, ...] = ()
    """In flight, but their group is neither awaited nor queued to re-run: nobody
    will ever bring them back."""
    overdue: tuple[str, ...] = ()
    """In flight in a group awaited past supervisor.group_deadline_s (the producer
    declares such a group lost; one still here was not handled)."""

    @property
    def unaccounted(self) -> tuple[str, ...]:
        return self.never_recorded + self.never_issued + self.orphaned

    @property
    def balanced(self) -> bool:
        return not self.unaccounted and not self.overdue

    def stats(self) -> dict[str, float]:
        return {
            "ledger/unaccounted": float(len(self.unaccounted)),
            "ledger/overdue": float(len(self.overdue)),
            "ledger/balanced": float(self.balanced),
        }


def audit(
    states: Mapping[str, str],
    issued: Mapping[str, Sequence[str]],
    live_groups: Collection[str],
    overdue_groups: Collection[str] = (),
) -> Audit:
    """Check the ledger's `states` against `issued` (group id -> the trajectory ids
    the producer issued for it, newest issue), `live_groups` (groups the producer
    awaits or has queued to run again) and `overdue_groups` (awaited past their
    deadline). Nothing here reads the ledger's own tallies."""
    group_of = {t: group for group, ids in issued.items() for t in ids}
    in_flight = sorted(t for t, state in states.items() if state == "in_flight")
    return Audit(
        never_recorded=tuple(sorted(t for t in group_of if t not in states)),
        never_issued=tuple(sorted(t for t in states if t not in group_of)),
        orphaned=tuple(t for t in in_flight if t in group_of and group_of[t] not in live_groups),
        overdue=tuple(t for t in in_flight if group_of.get(t) in overdue_groups),
    )
