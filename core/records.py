"""Typed records that cross process boundaries beside trajectories: what the
control plane asks of rollout workers and env pools (stats, health, weight syncs)
and what it hands a pool (a group to run).

Each part reports its own record; the control plane reads fields, never string
keys. Plain frozen dataclasses: no torch, cheap to pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GroupSpec:
    """One task for an env pool: run `size` episodes of `task_seed` as one group."""

    group_id: str
    task_seed: int
    size: int
    trajectory_ids: tuple[str, ...] = ()
    """The members' ids, issued by the caller (the producer counts them) and used
    as given; empty: `<group_id>/<index>` for each of the `size` members."""

    def __post_init__(self) -> None:
        if not self.trajectory_ids:
            ids = tuple(f"{self.group_id}/{index}" for index in range(self.size))
            object.__setattr__(self, "trajectory_ids", ids)
        if len(self.trajectory_ids) != self.size:
            raise ValueError(
                f"group {self.group_id}: {len(self.trajectory_ids)} trajectory ids for "
                f"{self.size} members"
            )


SPEC_VERSIONS_KEPT = 4
"""Weight versions an engine keeps speculation counts for."""


@dataclass
class EngineStats:
    """A rollout worker's engine counters since it started (the engine counts in
    one instance and reports copies)."""

    worker_id: str
    version: int
    requests: int = 0
    in_flight: int = 0
    outstanding_tokens: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    aborted: int = 0
    busy_s: float = 0.0
    spec_steps: int = 0
    spec_drafted: int = 0
    spec_accepted: int = 0
    spec_by_version: dict[int, tuple[int, int]] = field(default_factory=dict)
    """(drafted, accepted) speculative tokens per weight version the engine held when
    the request finished; the newest SPEC_VERSIONS_KEPT versions."""

    def count_speculation(self, version: int, drafted: int, accepted: int, steps: int) -> None:
        """Add one finished request's speculation, under the engine's weight `version`."""
        self.spec_steps += steps
        self.spec_drafted += drafted
        self.spec_accepted += accepted
        before = self.spec_by_version.get(version, (0, 0))
        self.spec_by_version[version] = (before[0] + drafted, before[1] + accepted)
        for old in sorted(self.spec_by_version)[:-SPEC_VERSIONS_KEPT]:
            del self.spec_by_version[old]

    @property
    def prefix_cache_hit(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass(frozen=True)
class WorkerHealth:
    worker_id: str
    version: int
    pid: int


@dataclass(frozen=True)
class SyncResult:
    """One worker's load of one weight version: what the update cost it."""

    version: int
    pause_s: float
    """Generation stood still on this worker (pause to resume)."""
    load_s: float
    drain_s: float
    """Waiting for in-flight work before loading (pause modes that wait; the rolling
    drain of `trajectory` locking adds its own wait)."""
    bytes: int
    lock_broken: int = 0
    """Trajectories still locked to the worker when its drain timed out."""
    transport: str = ""
    """The weight transport the version came by (its hops joined by `+`)."""
    transfers: tuple[Transfer, ...] = ()
    """What each hop of the transport moved and how long it took."""
    checksums: tuple[int | None, ...] = ()
    """core.digest checksum of each snapshot tensor as the engine holds it, in the
    snapshot's order; None where the engine has no counterpart it can read."""
    digest: str = ""
    """core.digest.combine over the snapshot's names, dtypes held and `checksums`:
    the snapshot's `held_digest` when the worker holds the learner's weights."""
    digest_s: float = 0.0
    """Seconds the worker spent computing `checksums` (inside vLLM)."""


@dataclass(frozen=True)
class Transfer:
    """One hop of a weight transport: its name, what it moved, how long it took."""

    transport: str
    bytes: int
    seconds: float


@dataclass(frozen=True)
class RouterLoad:
    """What one env pool's router has placed on one rollout worker."""

    outstanding_tokens: int
    queue_depth: int
    sessions: int
    placed_tokens: int
    healthy: bool
    draining: bool


@dataclass(frozen=True)
class PoolStats:
    pool_id: str
    pid: int
    episodes_started: int
    episodes_finished: int
    workers: dict[str, RouterLoad]

    @property
    def in_flight(self) -> int:
        return self.episodes_started - self.episodes_finished


@dataclass(frozen=True)
class Placement:
    """Where an actor runs, as it sees it from inside: its node, the GPU ids Ray
    assigned it (ray.get_gpu_ids()) and the CPU cores it runs on."""

    node_ip: str
    node_id: str
    gpu_ids: tuple[str, ...]
    cores: tuple[int, ...]

    @classmethod
    def here(cls, cores: tuple[int, ...] | None = None) -> Placement:
        """The calling actor's placement; `cores` where it bound its work to cores
        other than its own process's (a rollout worker's engine), else its affinity."""
        import os

        import ray

        context = ray.get_runtime_context()
        return cls(
            node_ip=ray.util.get_node_ip_address(),
            node_id=context.get_node_id(),
            gpu_ids=tuple(str(g) for g in ray.get_gpu_ids()),
            cores=tuple(sorted(cores if cores is not None else os.sched_getaffinity(0))),
        )
