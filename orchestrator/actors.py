"""Where every Ray actor of a run is created: Ray itself, the learner ranks, the
rollout workers and the env pools, with the options each needs.

Nothing else in asyncrl calls `ray.remote(...)` for a product actor or `ray.init`:
the owners (orchestrator.learners, orchestrator.fleet) ask here, so placement and
resources are decided in one place.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from core.config import Config, learner_algo

ACTOR_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "PYTHONWARNINGS": "ignore",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",  # weights come from local directories only, never a download
}
OBJECT_STORE_BYTES = 1 << 30


def start_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    # core.console.quiet runs in every Ray worker before it imports anything, so the
    # import-time notices of torchao and torch are filtered there too.
    runtime_env = {"env_vars": dict(ACTOR_ENV), "worker_process_setup_hook": "core.console.quiet"}
    ray.init(
        address=cfg.ray.address,
        num_cpus=cfg.ray.num_cpus,
        include_dashboard=cfg.ray.include_dashboard,
        object_store_memory=None if cfg.ray.address else OBJECT_STORE_BYTES,
        runtime_env=runtime_env,
        log_to_driver=True,
        logging_level=logging.WARNING,
    )


def learner_ranks(cfg: Config, model_path: str) -> list[Any]:
    """One LearnerWorker actor per DeepSpeed rank, meeting at a free local port."""
    import ray

    from learner.worker import LearnerWorker

    port = free_port()
    actor = ray.remote(LearnerWorker)
    return [
        actor.options(num_cpus=0).remote(
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


def rollout_worker(cfg: Config, model_path: str, index: int) -> Any:
    """Rollout worker `rollout-<index>` (its engine pinned to a core on CPU)."""
    import ray

    from rollout.worker import RolloutWorker

    return (
        ray.remote(RolloutWorker)
        .options(num_cpus=cfg.rollout.num_cpus, max_concurrency=100_000)
        .remote(
            worker_id(index),
            model_path,
            cfg.rollout,
            cfg.model.dtype,
            cfg.trainer.seed + index,
            _core_for(index) if cfg.rollout.bind_cores else None,
        )
    )


def env_pool(cfg: Config, model_path: str, workers: dict[str, Any], index: int) -> Any:
    """Env pool `pool-<index>`, placing turns on `workers`."""
    import ray

    from rollout.envpool import EnvPool

    return (
        ray.remote(EnvPool)
        .options(num_cpus=0, max_concurrency=100_000)
        .remote(f"pool-{index}", workers, model_path, cfg.env, cfg.rollout)
    )


def kill(actor: Any) -> None:
    """Kill an actor that may be gone already."""
    import ray

    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - it is being killed because it is unwanted or gone
        pass


def worker_id(index: int) -> str:
    return f"rollout-{index}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _core_for(worker_index: int) -> int | None:
    """The CPU core worker `worker_index`'s engine is pinned to (None on a GPU host)."""
    import torch

    if torch.cuda.is_available():
        return None
    return worker_index % (os.cpu_count() or 1)
