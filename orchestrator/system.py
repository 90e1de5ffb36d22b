"""System: the actors of a run and the calls the controller makes on them.

Owns Ray start-up and shutdown, creating the learner ranks, rollout workers and
env pools, and the group-level calls (train a batch on every rank, export
weights, publish them to every rollout worker, collect stats). Every call is
bounded by a timeout that names what it waited for.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import Config, learner_algo
from core.shm import DEFAULT_ROOT, WeightSnapshot, remove_snapshot
from core.types import Batch
from core.waits import bounded
from orchestrator.checkpoint import LEARNER_TAG, latest
from orchestrator.publisher import Publisher

log = logging.getLogger(__name__)

ACTOR_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "PYTHONWARNINGS": "ignore",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",  # weights come from local directories only, never a download
}
OBJECT_STORE_BYTES = 1 << 30


@dataclass
class LearnerGroup:
    """The DeepSpeed ranks of the learner, one Ray actor each; calls go to all ranks
    (steps and exports are collectives) and rank 0 answers."""

    cfg: Config
    ranks: list[Any]

    @classmethod
    async def start(cls, cfg: Config, model_path: str) -> LearnerGroup:
        group = cls(cfg, _create_learners(cfg, model_path))
        await bounded(
            asyncio.gather(*[r.ready.remote() for r in group.ranks]),
            cfg.learner.startup_timeout_s,
            f"{len(group.ranks)} DeepSpeed learner rank(s) to start",
        )
        return group

    async def train_step(self, batch: Batch) -> dict[str, float]:
        results = await self._all(
            "train_step", (batch,), f"learner step at version {batch.learner_version}"
        )
        return results[0]

    async def export_weights(self, directory: Path, version: int) -> WeightSnapshot:
        results = await self._all(
            "export_weights", (str(directory), version), f"learner to export weights v{version}"
        )
        return results[0]

    async def logprobs(self, ids: list[int]) -> list[float]:
        results = await self._all("logprobs", (ids,), "learner logprobs")
        return results[0]

    async def save_pretrained(self, directory: str) -> None:
        await self._all("save_pretrained", (directory,), "learner to save a checkpoint")

    async def save_checkpoint(self, directory: str, tag: str) -> None:
        await self._all("save_checkpoint", (directory, tag), f"learner checkpoint {tag}")

    async def load_checkpoint(self, directory: str, tag: str) -> int:
        results = await self._all(
            "load_checkpoint", (directory, tag), f"learner to load checkpoint {tag}"
        )
        return results[0]

    def kill(self) -> None:
        import ray

        for rank in self.ranks:
            ray.kill(rank)

    async def _all(self, method: str, args: tuple, what: str) -> list[Any]:
        calls = [getattr(rank, method).remote(*args) for rank in self.ranks]
        return await bounded(asyncio.gather(*calls), self.cfg.learner.step_timeout_s, what)


@dataclass
class System:
    cfg: Config
    model_path: str
    learner: LearnerGroup
    workers: dict[str, Any]
    pools: list[Any]
    weights_dir: Path
    publisher: Publisher
    published: list[WeightSnapshot] = field(default_factory=list)
    version: int = 0
    """The last weight version published to the rollout workers."""
    learner_restarts: int = 0
    weights_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a version is published or a replacement worker is loaded, so a
    replacement never misses a version."""

    @classmethod
    async def start(cls, cfg: Config, model_path: str) -> System:
        start_ray(cfg)
        run_id = f"{Path(cfg.logger.run_dir).name}-{os.getpid()}"
        weights_dir = Path(DEFAULT_ROOT) / "asyncrl" / run_id
        started = time.perf_counter()
        workers = _create_workers(cfg, model_path)
        learner_starting = asyncio.ensure_future(LearnerGroup.start(cfg, model_path))
        await bounded(
            asyncio.gather(*[w.start.remote() for w in workers.values()]),
            cfg.rollout.startup_timeout_s,
            f"{len(workers)} vLLM rollout worker(s) to start",
        )
        learner = await learner_starting
        log.info("learner and rollout workers up in %.0fs", time.perf_counter() - started)
        pools = _create_pools(cfg, model_path, workers)
        publisher = Publisher(workers, pools, cfg.rollout)
        return cls(cfg, model_path, learner, workers, pools, weights_dir, publisher)

    async def train_step(self, batch: Batch) -> dict[str, float]:
        return await self._on_learner("train_step", batch)

    async def export_weights(self, version: int) -> WeightSnapshot:
        return await self._on_learner("export_weights", self.weights_dir, version)

    @property
    def live_workers(self) -> dict[str, Any]:
        return {w: h for w, h in self.workers.items() if w not in self.publisher.dead}

    async def publish(self, snapshot: WeightSnapshot) -> dict[str, float]:
        """Load `snapshot` into every live rollout worker (per the lock policy) and
        free the snapshot before it."""
        async with self.weights_lock:
            metrics = await self.publisher.publish(snapshot)
            self.version = snapshot.version
            self.published.append(snapshot)
            while len(self.published) > 1:
                remove_snapshot(self.published.pop(0))
        return metrics

    async def replace_worker(self, worker_id: str) -> None:
        """Start a new rollout worker under `worker_id`, load the current weights
        and hand it to the publisher and every env pool."""
        import ray

        index = list(self.workers).index(worker_id)
        try:
            ray.kill(self.workers[worker_id])
        except Exception:  # noqa: BLE001 - it is being replaced because it is gone
            pass
        handle = _create_worker(self.cfg, self.model_path, index)
        await bounded(
            handle.start.remote(), self.cfg.rollout.startup_timeout_s, f"{worker_id} to restart"
        )
        async with self.weights_lock:
            if self.published:
                await bounded(
                    handle.update_weights.remote(self.published[-1], "turn"),
                    self.cfg.rollout.sync_timeout_s,
                    f"restarted {worker_id} to load v{self.version}",
                )
            self.workers[worker_id] = handle
            self.publisher.revive(worker_id, handle)
            await bounded(
                asyncio.gather(*[p.replace_worker.remote(worker_id, handle) for p in self.pools]),
                30.0,
                f"env pools to take back {worker_id}",
            )

    async def replace_pool(self, index: int) -> None:
        """A new env pool in slot `index` (its groups are re-run by the producer)."""
        import ray

        try:
            ray.kill(self.pools[index])
        except Exception:  # noqa: BLE001 - it is being replaced because it is gone
            pass
        self.pools[index] = _create_pool(self.cfg, self.model_path, self.workers, index)

    async def worker_stats(self) -> dict[str, dict[str, Any]]:
        """Engine stats of each rollout worker that answers (a lost one is the
        supervisor's business, not a reason to stop logging)."""
        live = self.live_workers
        results = await bounded(
            asyncio.gather(*[w.stats.remote() for w in live.values()], return_exceptions=True),
            30.0,
            "rollout worker stats",
        )
        return {w: r for w, r in zip(live, results, strict=True) if not isinstance(r, Exception)}

    async def pool_stats(self) -> list[dict[str, Any]]:
        """Each answering env pool's episode counts and its router's per-worker load."""
        results = await bounded(
            asyncio.gather(*[p.stats.remote() for p in self.pools], return_exceptions=True),
            30.0,
            "env pool stats",
        )
        return [r for r in results if not isinstance(r, Exception)]

    async def prompt_logprobs(self, ids: list[int]) -> dict[str, list[float]]:
        """Each live rollout worker's logprobs of `ids` (to check weights arrived)."""
        live = self.live_workers
        results = await bounded(
            asyncio.gather(*[w.prompt_logprobs.remote(ids) for w in live.values()]),
            60.0,
            "rollout workers' prompt logprobs",
        )
        return dict(zip(live, results, strict=True))

    async def learner_logprobs(self, ids: list[int]) -> list[float]:
        return await self.learner.logprobs(ids)

    async def save_pretrained(self, directory: str) -> None:
        await self._on_learner("save_pretrained", directory)

    async def save_checkpoint(self, directory: Path) -> None:
        await self._on_learner("save_checkpoint", str(directory / "learner"), LEARNER_TAG)

    async def restart_learner(self) -> None:
        """New learner ranks, restored from the run's newest checkpoint (or the
        initial policy when there is none). Versions keep counting: what the
        restored learner publishes next is a new version."""
        self.learner.kill()
        self.learner = await LearnerGroup.start(self.cfg, self.model_path)
        self.learner_restarts += 1
        checkpoint = latest(self.cfg.logger.run_dir)
        if checkpoint is None:
            log.error("learner restarted from the initial policy: no checkpoint yet")
            return
        await self.learner.load_checkpoint(str(checkpoint / "learner"), LEARNER_TAG)
        log.warning("learner restored from %s", checkpoint)

    async def _on_learner(self, method: str, *args: Any) -> Any:
        """Call the learner group; when a rank has died, restore it and retry
        (up to supervisor.max_restarts times, then stop with a clear error)."""
        import ray

        for attempt in itertools.count():
            try:
                return await getattr(self.learner, method)(*args)
            except ray.exceptions.RayActorError as exc:
                if attempt >= self.cfg.supervisor.max_restarts:
                    raise RuntimeError(
                        f"the learner died {attempt + 1} times (last: {exc}); stopping"
                    ) from exc
                log.error("learner rank lost during %s (%s); restoring the learner", method, exc)
                await self.restart_learner()
        raise AssertionError("unreachable")

    async def shutdown(self) -> None:
        import ray

        # Pools first: an episode still running when its worker goes would log a lost
        # worker for a run that is simply over.
        for pool in self.pools:
            ray.kill(pool)
        try:
            await bounded(
                asyncio.gather(*[w.shutdown.remote() for w in self.live_workers.values()]),
                60.0,
                "rollout workers to shut down",
            )
        except Exception as exc:  # noqa: BLE001 - shutting down anyway
            log.warning("rollout workers did not shut down cleanly: %s", exc)
        for worker in self.workers.values():
            ray.kill(worker)
        self.learner.kill()
        shutil.rmtree(self.weights_dir, ignore_errors=True)


def start_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    ray.init(
        address=cfg.ray.address,
        num_cpus=cfg.ray.num_cpus,
        include_dashboard=cfg.ray.include_dashboard,
        object_store_memory=None if cfg.ray.address else OBJECT_STORE_BYTES,
        # core.console.quiet runs in every Ray worker before it imports anything, so the
        # import-time notices of torchao and torch are filtered there too.
        runtime_env={
            "env_vars": dict(ACTOR_ENV),
            "worker_process_setup_hook": "core.console.quiet",
        },
        log_to_driver=True,
        logging_level=logging.WARNING,
    )


def _create_learners(cfg: Config, model_path: str) -> list[Any]:
    import ray

    from learner.worker import LearnerWorker

    port = _free_port()
    actor = ray.remote(LearnerWorker)
    return [
        actor.options(num_cpus=0, name=None).remote(
            model_path,
            cfg.learner,
            learner_algo(cfg),
            cfg.rollout.temperature,
            rank,
            cfg.learner.num_ranks,
            port,
            cfg.trainer.seed,
        )
        for rank in range(cfg.learner.num_ranks)
    ]


def _create_workers(cfg: Config, model_path: str) -> dict[str, Any]:
    return {
        f"rollout-{i}": _create_worker(cfg, model_path, i) for i in range(cfg.rollout.num_workers)
    }


def _create_worker(cfg: Config, model_path: str, index: int) -> Any:
    import ray

    from rollout.worker import RolloutWorker

    return (
        ray.remote(RolloutWorker)
        .options(num_cpus=cfg.rollout.num_cpus, max_concurrency=100_000)
        .remote(
            f"rollout-{index}",
            model_path,
            cfg.rollout,
            cfg.model.dtype,
            cfg.trainer.seed + index,
            _core_for(index) if cfg.rollout.bind_cores else None,
        )
    )


def _core_for(worker_index: int) -> int | None:
    """The CPU core worker `worker_index`'s engine is pinned to (None on a GPU host)."""
    import torch

    if torch.cuda.is_available():
        return None
    return worker_index % (os.cpu_count() or 1)


def _create_pools(cfg: Config, model_path: str, workers: dict[str, Any]) -> list[Any]:
    return [_create_pool(cfg, model_path, workers, i) for i in range(cfg.env.num_pools)]


def _create_pool(cfg: Config, model_path: str, workers: dict[str, Any], index: int) -> Any:
    import ray

    from rollout.envpool import EnvPool

    return (
        ray.remote(EnvPool)
        .options(num_cpus=0, max_concurrency=100_000)
        .remote(f"pool-{index}", workers, model_path, cfg.env, cfg.rollout)
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
