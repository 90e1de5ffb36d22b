"""Router: which rollout worker serves each turn.

A new trajectory goes to the healthy, non-draining worker with the least
outstanding work, counted in tokens (prompt plus the turn's token budget), not
in requests; ties rotate so equal workers share the load. Every later turn of
a trajectory goes back to the same worker (its prefix is in that engine's
cache). A dead worker's sessions are moved on their next turn, and the move is
reported so the trajectory can record the break.

A plain class: no Ray, no asyncio; callers hold it and report what they send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.records import RouterLoad


class NoWorkerAvailable(RuntimeError):
    """No healthy worker is left: the turn cannot be served."""


class WorkersDraining(NoWorkerAvailable):
    """Every healthy worker is draining for a weight update: wait and place again."""


@dataclass
class WorkerLoad:
    outstanding_tokens: int = 0
    in_flight: int = 0
    placed_sessions: int = 0
    placed_tokens: int = 0
    """Every token ever placed here (prompt + budget), for placement skew."""
    healthy: bool = True
    draining: bool = False


@dataclass
class Placement:
    worker_id: str
    moved: bool
    """The session had a worker that is no longer usable."""


@dataclass
class Router:
    worker_ids: list[str]
    loads: dict[str, WorkerLoad] = field(init=False)
    sessions: dict[str, str] = field(default_factory=dict)
    _turn: int = 0

    def __post_init__(self) -> None:
        if not self.worker_ids:
            raise ValueError("a router needs at least one worker")
        self.loads = {wid: WorkerLoad() for wid in self.worker_ids}

    def place(self, session_id: str, cost_tokens: int) -> Placement:
        """Choose the worker for a session's next turn and count the work on it."""
        current = self.sessions.get(session_id)
        moved = False
        if current is not None and self.loads[current].healthy:
            worker_id = current
        else:
            moved = current is not None
            worker_id = self._least_loaded()
            self.sessions[session_id] = worker_id
            self.loads[worker_id].placed_sessions += 1
        load = self.loads[worker_id]
        load.outstanding_tokens += cost_tokens
        load.placed_tokens += cost_tokens
        load.in_flight += 1
        return Placement(worker_id, moved)

    def done(self, worker_id: str, cost_tokens: int) -> None:
        load = self.loads[worker_id]
        load.outstanding_tokens -= cost_tokens
        load.in_flight -= 1

    def end_session(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    def mark_dead(self, worker_id: str) -> None:
        self.loads[worker_id].healthy = False

    def set_draining(self, worker_id: str, draining: bool) -> None:
        self.loads[worker_id].draining = draining

    def add_worker(self, worker_id: str) -> list[str]:
        """Add a worker, or bring back a replaced one under the same id; returns
        the sessions that were on the lost one (their next turns start afresh)."""
        if worker_id not in self.loads:
            self.worker_ids.append(worker_id)
        placed = self.loads[worker_id].placed_tokens if worker_id in self.loads else 0
        self.loads[worker_id] = WorkerLoad(placed_tokens=placed)
        orphans = self.sessions_on(worker_id)
        for session in orphans:
            self.sessions.pop(session)
        return orphans

    def sessions_on(self, worker_id: str) -> list[str]:
        """The live sessions placed on `worker_id` (what a drain waits for)."""
        return [s for s, w in self.sessions.items() if w == worker_id]

    def stats(self) -> dict[str, RouterLoad]:
        """Per worker: outstanding tokens, queue depth, sessions, tokens placed, state."""
        return {
            wid: RouterLoad(
                outstanding_tokens=load.outstanding_tokens,
                queue_depth=load.in_flight,
                sessions=len(self.sessions_on(wid)),
                placed_tokens=load.placed_tokens,
                healthy=load.healthy,
                draining=load.draining,
            )
            for wid, load in self.loads.items()
        }

    def _least_loaded(self) -> str:
        open_workers = [w for w in self.worker_ids if self._admits(w)]
        if not open_workers:
            if any(load.healthy for load in self.loads.values()):
                raise WorkersDraining("every healthy rollout worker is draining for an update")
            raise NoWorkerAvailable("no healthy rollout worker is left")
        self._turn += 1
        rotation = {
            w: (i - self._turn) % len(self.worker_ids) for i, w in enumerate(self.worker_ids)
        }
        return min(open_workers, key=lambda w: (self.loads[w].outstanding_tokens, rotation[w]))

    def _admits(self, worker_id: str) -> bool:
        load = self.loads[worker_id]
        return load.healthy and not load.draining


def placement_skew(placed: list[float]) -> float:
    """Max over mean of per-worker placed work (1.0 is perfectly even)."""
    mean = sum(placed) / len(placed) if placed else 0.0
    return max(placed) / mean if mean > 0 else 1.0
