"""RolloutWorker: the Ray actor around one vLLM engine (a thin shell over Engine).

Sets the process-level knobs vLLM reads from the environment before it is
imported (CPU KV-cache size, core binding, log level), then forwards calls.
"""

from __future__ import annotations

import os
from typing import Any

from core.config import RolloutConfig
from core.records import EngineStats, Placement, SyncResult, WorkerHealth
from core.shm import WeightSnapshot, remove_snapshot
from core.transports import SHM, hop
from rollout.engine import Engine, Generation, SamplingSpec
from rollout.engine_args import check_supported
from rollout.staging import fetch, through_object_store

ENGINE_EXIT_GRACE_S = 1.0
"""How long a stopping worker's engine process may take to exit before it is killed
(Engine.shutdown): vLLM's teardown fits; the interpreter's finalization does not."""


class RolloutWorker:
    def __init__(
        self,
        worker_id: str,
        model_path: str,
        cfg: RolloutConfig,
        dtype: str,
        seed: int,
        core: int | None = None,
    ):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        self.core = _on_this_machine(core)
        if self.core is not None:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(self.core)
        check_supported(cfg.return_routed_experts)
        self.worker_id = worker_id
        self.sync_draft = cfg.speculative.sync_draft
        self.weight_transport = cfg.weight_transport
        self.node_id = Placement.here().node_id  # an actor never changes node
        self.engine = Engine(model_path, cfg, dtype, seed, self.core)

    async def start(self) -> str:
        await self.engine.start()
        return self.worker_id

    async def generate(
        self,
        prompt_ids: list[int],
        spec: SamplingSpec,
        timeout_s: float,
        images: list[bytes] | None = None,
    ) -> Generation:
        return await self.engine.generate(prompt_ids, spec, timeout_s, images)

    async def update_weights(
        self, snapshot: WeightSnapshot, lock: str, payload: list[Any] | None = None
    ) -> SyncResult:
        """Load `snapshot`: in place when it lies in this node's shared memory, else
        from `payload` (a ref to its bytes in Ray's object store), staged here first
        (core.transports decides which; rollout.staging stages)."""
        if hop(self.weight_transport, snapshot.node_id, self.node_id) == SHM:
            return await self.engine.update_weights(snapshot, lock, self.sync_draft)
        staged, fetched = await fetch(snapshot, payload, self.worker_id, self.node_id)
        try:
            sync = await self.engine.update_weights(staged, lock, self.sync_draft)
        finally:
            remove_snapshot(staged)
        return through_object_store(sync, fetched)

    async def sleep(self, level: int, lock: str) -> float:
        """Free the device for a colocated learner step (until the next update)."""
        return await self.engine.sleep(level, lock)

    async def is_sleeping(self) -> bool:
        return await self.engine.is_sleeping()

    async def prompt_logprobs(
        self, ids: list[int], images: list[bytes] | None = None
    ) -> list[float]:
        return await self.engine.prompt_logprobs(ids, images)

    def stats(self) -> EngineStats:
        return self.engine.snapshot_stats(self.worker_id)

    def placement(self) -> Placement:
        """Where this worker runs; its cores are its engine's when it is bound to one."""
        return Placement.here(None if self.core is None else (self.core,))

    async def engine_processes(self) -> list[dict[str, Any]]:
        """The vLLM processes that run this worker's model (Engine.processes), each
        with `spawned_by_worker`: whether this actor's process started it, and
        `prespawned`: whether it is the one spawned before vLLM asked for it."""
        warm = self.engine.prespawned
        return [
            p
            | {"spawned_by_worker": p["ppid"] == os.getpid()}
            | {"prespawned": warm is not None and p["pid"] == warm.process.pid}
            for p in await self.engine.processes()
        ]

    def health(self) -> WorkerHealth:
        return WorkerHealth(self.worker_id, self.engine.version, os.getpid())

    def shutdown(self) -> None:
        self.engine.shutdown(ENGINE_EXIT_GRACE_S)


def _on_this_machine(core: int | None) -> int | None:
    """`core` (from the placement, which counts Ray's logical CPUs) as one of the cores
    this process may run on: the plan's core modulo those."""
    if core is None:
        return None
    usable = sorted(os.sched_getaffinity(0))
    return core if core in usable else usable[core % len(usable)]
