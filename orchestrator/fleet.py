"""The rollout fleet: rollout workers, env pools, which workers are dead, and
bringing each new weight version to every live worker.

One owner: nothing else holds the workers dict, the pools list or the dead set
(the supervisor and the producer ask the fleet to replace a worker or a pool).

Publishing follows `rollout.lock`:
- `turn` and `none`: every live worker loads at once; its engine pauses as the
  policy says (let in-flight turns finish / freeze them and resume on the new
  weights);
- `trajectory`: a rolling update, one worker at a time, so the others keep
  generating: the env pools stop placing new trajectories on the worker, the fleet
  waits for the ones locked to it (at most `rollout.lock_timeout_s`; those still
  running are then marked lock-broken), the worker loads, re-opens.
Each worker loads a version by the transport core.transports picks for it: in place
from shared memory on learner rank 0's node, through Ray's object store on any other
(the fleet then asks the learner, through `payload_source`, for one object-store
copy per version, shared by every worker off rank 0's node).
Every update ends with each worker confirming the version it holds and the
checksum of each tensor as its engine holds it; the fleet compares them with the
learner's (core.digest, recorded on the snapshot) and raises WeightMismatch naming
the worker and the tensors on any difference. A worker that dies or hangs during
an update is marked dead in every pool and skipped: the run goes on while one
worker lives. A replacement worker loads the
latest published version before it serves. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.config import Config
from core.records import EngineStats, PoolStats, SyncResult, WorkerHealth
from core.shm import WeightSnapshot, remove_snapshot
from core.transports import SHM, hop
from core.waits import bounded
from orchestrator import actors
from orchestrator.placement import Role, fmt, plan

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.05


class NoLiveWorkers(RuntimeError):
    """Every rollout worker is dead: nothing can generate any more."""


class WeightMismatch(RuntimeError):
    """A rollout worker does not hold the version, or the weights, it was sent."""


@dataclass
class Fleet:
    cfg: Config
    model_path: str
    workers: dict[str, Any]
    pools: list[Any]
    dead: set[str] = field(default_factory=set)
    published: WeightSnapshot | None = None
    """The newest version every live worker has (a replacement loads it)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a version is published or a replacement is loaded, so a
    replacement never misses a version."""
    _publishing: asyncio.Task | None = None
    nodes: dict[str, str] = field(default_factory=dict)
    """The Ray node of each worker (as it reported it when it started)."""
    payload_source: Callable[[WeightSnapshot], Any] | None = None
    """Puts a snapshot's bytes into Ray's object store, returning the ref (the
    learner's, wired by orchestrator.system)."""
    _payload: tuple[int, Any] | None = None
    """The newest version's object-store ref, made at most once per version."""

    @classmethod
    async def start(cls, cfg: Config, model_path: str) -> Fleet:
        """Start the rollout workers and, beside them, the env pools that place turns
        on them (a pool needs only the workers' handles until its first episode)."""
        workers = {
            actors.worker_id(i): actors.rollout_worker(cfg, model_path, i)
            for i in range(cfg.rollout.num_workers)
        }
        pools = [actors.env_pool(cfg, model_path, workers, i) for i in range(cfg.env.num_pools)]
        await bounded(
            asyncio.gather(
                *[w.start.remote() for w in workers.values()],
                *[p.placement.remote() for p in pools],
            ),
            cfg.rollout.startup_timeout_s,
            f"{len(workers)} vLLM rollout worker(s) and {len(pools)} env pool(s) to start",
        )
        fleet = cls(cfg, model_path, workers, pools)
        nodes = await asyncio.gather(*[fleet._node_of(h, w) for w, h in workers.items()])
        fleet.nodes = dict(zip(workers, nodes, strict=True))
        return fleet

    @property
    def version(self) -> int:
        """The last weight version published to the rollout workers."""
        return self.published.version if self.published else 0

    @property
    def live_workers(self) -> dict[str, Any]:
        return {w: h for w, h in self.workers.items() if w not in self.dead}

    # -- weights ----------------------------------------------------------------------

    async def publish(self, snapshot: WeightSnapshot, background: bool = False) -> dict[str, float]:
        """Load `snapshot` into every live worker; with `background`, start doing so
        and return at once (`synced()` waits for it). One publish at a time."""
        await self.synced()
        # Ask for the object-store copy now: Ray runs rank 0's calls in the order they
        # are sent, so it is made before the learner's next step, not after it.
        for worker_id in self.live_workers:
            if worker_id in self.nodes:  # an unknown one is asked in _update
                self._payload_for(worker_id, snapshot)
        if background:
            self._publishing = asyncio.create_task(self._publish(snapshot))
            return {}
        return await self._publish(snapshot)

    @property
    def busy(self) -> bool:
        """A version is being published or a replacement loaded, or an evaluation holds
        the workers (pinned): the engines have work besides the producer's groups."""
        return self.lock.locked() or (self._publishing is not None and not self._publishing.done())

    async def pin(self) -> int:
        """Hold the published version on every worker (an evaluation of it runs): the
        next publish, and a replacement's load, wait until `unpin`."""
        await self.lock.acquire()
        return self.version

    def unpin(self) -> None:
        self.lock.release()

    async def synced(self) -> dict[str, float]:
        """Wait for a background publish; its sync metrics ({} when none ran)."""
        task, self._publishing = self._publishing, None
        return await task if task is not None else {}

    async def _publish(self, snapshot: WeightSnapshot) -> dict[str, float]:
        started = time.perf_counter()
        async with self.lock:
            live = list(self.live_workers)
            if self.cfg.rollout.lock == "trajectory":
                syncs = [await self._rolling_update(w, snapshot) for w in live]
            else:
                syncs = await asyncio.gather(*[self._update(w, snapshot) for w in live])
            loaded = {w: s for w, s in zip(live, syncs, strict=True) if s is not None}
            if not loaded:
                raise NoLiveWorkers(f"no rollout worker is alive to load v{snapshot.version}")
            for worker_id, sync in loaded.items():
                confirm(worker_id, sync, snapshot)
            previous, self.published = self.published, snapshot
            if previous is not None:
                remove_snapshot(previous)
        metrics = _sync_metrics(list(loaded.values()), snapshot, time.perf_counter() - started)
        return metrics | self.stats()

    async def _rolling_update(self, worker_id: str, snapshot: WeightSnapshot) -> SyncResult | None:
        started = time.perf_counter()
        await self._on_pools(lambda p: p.set_draining.remote(worker_id, True), "drain")
        try:
            broken = await self._drain(worker_id)
            sync = await self._update(worker_id, snapshot)
        finally:
            await self._on_pools(lambda p: p.set_draining.remote(worker_id, False), "re-open")
        if sync is None:
            return None
        drain_s = time.perf_counter() - started - sync.load_s
        return dataclasses.replace(sync, drain_s=drain_s, lock_broken=broken)

    async def _drain(self, worker_id: str) -> int:
        """Wait for the trajectories locked to `worker_id`; those left at
        rollout.lock_timeout_s are marked lock-broken. Returns how many were."""
        deadline = time.monotonic() + self.cfg.rollout.lock_timeout_s
        while (left := sum(await self._on_pools(lambda p: p.sessions_on.remote(worker_id)))) > 0:
            if time.monotonic() >= deadline:
                log.warning(
                    "%s: %d trajectories still running after rollout.lock_timeout_s=%.0fs; "
                    "they continue on the new weights, recorded as lock-broken",
                    worker_id,
                    left,
                    self.cfg.rollout.lock_timeout_s,
                )
                return sum(await self._on_pools(lambda p: p.break_locks.remote(worker_id)))
            await asyncio.sleep(DRAIN_POLL_S)
        return 0

    async def _update(self, worker_id: str, snapshot: WeightSnapshot) -> SyncResult | None:
        import ray

        try:
            if worker_id not in self.nodes:  # a fleet assembled without Fleet.start
                self.nodes[worker_id] = await self._node_of(self.workers[worker_id], worker_id)
            payload = self._payload_for(worker_id, snapshot)
            return await bounded(
                self.workers[worker_id].update_weights.remote(
                    snapshot, self.cfg.rollout.lock, payload
                ),
                self.cfg.rollout.sync_timeout_s,
                f"{worker_id} to load weights v{snapshot.version}",
            )
        except (ray.exceptions.RayActorError, TimeoutError) as exc:
            log.error("%s lost during the update (%s); marking it dead", worker_id, exc)
            self.dead.add(worker_id)
            await self._on_pools(lambda p: p.mark_dead.remote(worker_id), "mark dead")
            return None

    def _payload_for(self, worker_id: str, snapshot: WeightSnapshot) -> list[Any] | None:
        """[ref to the snapshot's bytes] when `worker_id` loads through the object
        store (in a list: Ray passes a nested ref as it is), else None."""
        node = self.nodes.get(worker_id, "")
        if hop(self.cfg.rollout.weight_transport, snapshot.node_id, node) == SHM:
            return None
        if self._payload is None or self._payload[0] != snapshot.version:
            if self.payload_source is None:
                raise RuntimeError(f"{worker_id} needs weights from another node: no source")
            self._payload = (snapshot.version, self.payload_source(snapshot))
        return [self._payload[1]]

    async def sleep(self) -> dict[str, float]:
        """Under placement=colocated, put every live worker's vLLM to sleep so the learner
        has the devices (the next publish wakes each as it loads); {} otherwise. A worker
        that does not answer is the supervisor's business."""
        level = actors.rollout_config(self.cfg).sleep_level
        if level == 0:
            return {}
        lock = self.cfg.rollout.lock
        answers = await self._answers(
            [w.sleep.remote(level, lock) for w in self.live_workers.values()], "workers to sleep"
        )
        slept = [a for a in answers if not isinstance(a, Exception)]
        return {"sync/sleep_s": max(slept, default=0.0), "sync/asleep": float(len(slept))}

    # -- membership ---------------------------------------------------------------------

    async def replace_worker(self, worker_id: str) -> None:
        """Start a new rollout worker under `worker_id`, load the published version
        and hand it to every env pool."""
        actors.kill(self.workers[worker_id])
        index = list(self.workers).index(worker_id)
        log.warning(
            "%s: starting its replacement in its placement bundle (%s), on whichever live "
            "node Ray re-placed it; waiting at most rollout.startup_timeout_s=%.0fs",
            worker_id,
            fmt(plan(self.cfg).bundle(Role.rollout, index).resources()),
            self.cfg.rollout.startup_timeout_s,
        )
        handle = actors.rollout_worker(self.cfg, self.model_path, index)
        await bounded(
            handle.start.remote(), self.cfg.rollout.startup_timeout_s, f"{worker_id} to restart"
        )
        self.nodes[worker_id] = await self._node_of(handle, worker_id)
        async with self.lock:
            if self.published is not None:
                payload = self._payload_for(worker_id, self.published)
                sync = await bounded(
                    handle.update_weights.remote(self.published, "turn", payload),
                    self.cfg.rollout.sync_timeout_s,
                    f"restarted {worker_id} to load v{self.version}",
                )
                confirm(worker_id, sync, self.published)
            self.workers[worker_id] = handle
            self.dead.discard(worker_id)
            await self._on_pools(lambda p: p.replace_worker.remote(worker_id, handle), "take back")

    def replace_pool(self, index: int) -> None:
        """A new env pool in slot `index` (its groups are re-run by the producer)."""
        actors.kill(self.pools[index])
        self.pools[index] = actors.env_pool(self.cfg, self.model_path, self.workers, index)

    async def _node_of(self, handle: Any, worker_id: str) -> str:
        where = await bounded(
            handle.placement.remote(), self.cfg.ray.call_timeout_s, f"{worker_id}'s node"
        )
        return where.node_id

    async def health(self, worker_id: str, timeout_s: float) -> WorkerHealth:
        return await bounded(
            self.workers[worker_id].health.remote(), timeout_s, f"{worker_id} health"
        )

    # -- what the fleet reports ---------------------------------------------------------

    async def worker_stats(self) -> dict[str, EngineStats]:
        """Engine stats of each live worker that answers (a lost one is the
        supervisor's business, not a reason to stop logging)."""
        live = self.live_workers
        answers = await self._answers([w.stats.remote() for w in live.values()], "worker stats")
        return {w: a for w, a in zip(live, answers, strict=True) if not isinstance(a, Exception)}

    async def pool_stats(self) -> list[PoolStats]:
        """Each answering env pool's episode counts and its router's per-worker load."""
        answers = await self._answers([p.stats.remote() for p in self.pools], "env pool stats")
        return [a for a in answers if not isinstance(a, Exception)]

    async def prompt_logprobs(self, ids: list[int]) -> dict[str, list[float]]:
        """Each live worker's logprobs of `ids` (to check weights arrived)."""
        live = self.live_workers
        calls = [w.prompt_logprobs.remote(ids) for w in live.values()]
        answers = await bounded(
            asyncio.gather(*calls), self.cfg.ray.call_timeout_s, "rollout workers' logprobs"
        )
        return dict(zip(live, answers, strict=True))

    def stats(self) -> dict[str, float]:
        return {"fault/dead_workers": float(len(self.dead))}

    async def shutdown(self) -> None:
        # Pools first: an episode still running when its worker goes would log a lost
        # worker for a run that is simply over.
        for pool in self.pools:
            actors.kill(pool)
        try:
            calls = [w.shutdown.remote() for w in self.live_workers.values()]
            await bounded(
                asyncio.gather(*calls), self.cfg.ray.shutdown_timeout_s, "rollout workers to stop"
            )
        except Exception as exc:  # noqa: BLE001 - shutting down anyway
            log.warning("rollout workers did not shut down cleanly: %s", exc)
        for worker in self.workers.values():
            actors.kill(worker)
        if self.published is not None:
            remove_snapshot(self.published)

    async def _on_pools(self, call: Callable[[Any], Any], what: str = "") -> list[Any]:
        """`call(pool)` on every env pool, bounded by ray.call_timeout_s."""
        calls = [call(pool) for pool in self.pools]
        return await bounded(asyncio.gather(*calls), self.cfg.ray.call_timeout_s, f"pools: {what}")

    async def _answers(self, calls: list[Any], what: str) -> list[Any]:
        gathered = asyncio.gather(*calls, return_exceptions=True)
        return await bounded(gathered, self.cfg.ray.call_timeout_s, what)


def confirm(worker_id: str, sync: SyncResult, snapshot: WeightSnapshot) -> None:
    """Raise WeightMismatch unless `worker_id` reports the snapshot's version and,
    for every tensor both sides could checksum, the learner's checksum (of the
    tensor cast to the engine's dtype, where that is narrower: core.shm)."""
    if sync.version != snapshot.version:
        raise WeightMismatch(
            f"{worker_id} reports weights v{sync.version} after loading v{snapshot.version}"
        )
    if len(sync.checksums) != len(snapshot.entries):
        raise WeightMismatch(
            f"{worker_id} confirmed {len(sync.checksums)} tensors of the "
            f"{len(snapshot.entries)} in v{snapshot.version}"
        )
    differing = [
        e.name
        for e, held in zip(snapshot.entries, sync.checksums, strict=True)
        if None not in (held, e.held_checksum) and held != e.held_checksum
    ]
    if differing:
        more = f" and {len(differing) - 5} more" if differing[5:] else ""
        shown = ", ".join(differing[:5]) + more
        raise WeightMismatch(
            f"{worker_id} holds weights that differ from the learner's v{snapshot.version} "
            f"(digest {sync.digest}, learner's {snapshot.held_digest}): {shown}"
        )


def _sync_metrics(
    loaded: list[SyncResult], snapshot: WeightSnapshot, total_s: float
) -> dict[str, float]:
    metrics = {
        "sync/pause_s": max(s.pause_s for s in loaded),
        "sync/drain_s": max(s.drain_s for s in loaded),
        "sync/load_s": max(s.load_s for s in loaded),
        "sync/total_s": total_s,
        "sync/lock_broken": float(sum(s.lock_broken for s in loaded)),
        "sync/bytes": float(snapshot.total_bytes),
        "sync/digest_s": max(s.digest_s for s in loaded),
        "sync/unconfirmed_tensors": float(max(s.checksums.count(None) for s in loaded)),
    }
    return metrics | _transport_metrics(loaded)


def _transport_metrics(loaded: list[SyncResult]) -> dict[str, float]:
    """`sync/transport/<name>`: how many workers loaded through it (metrics are
    floats: core/metrics.py); per hop transport, `sync/<hop>_bytes` summed over the
    workers and `sync/<hop>_s`, the slowest worker's."""
    metrics: dict[str, float] = {}
    for sync in loaded:
        key = f"sync/transport/{sync.transport}"
        metrics[key] = metrics.get(key, 0.0) + 1
        for transfer in sync.transfers:
            name = transfer.transport
            bytes_key, seconds_key = f"sync/{name}_bytes", f"sync/{name}_s"
            metrics[bytes_key] = metrics.get(bytes_key, 0.0) + transfer.bytes
            metrics[seconds_key] = max(metrics.get(seconds_key, 0.0), transfer.seconds)
    return metrics
