"""Where every Ray actor of a run is created: Ray itself, the learner ranks, the
rollout workers and the env pools, with the options each needs.

Nothing else in asyncrl calls `ray.remote(...)` for a product actor or `ray.init`:
the owners (orchestrator.learners, orchestrator.fleet) ask here, so placement and
resources are decided in one place. Every actor sits in a bundle of a Ray placement
group reserved from orchestrator.placement's plan (`reserve`, once per plan) and is
created with `actor_options`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from core.choices import PlacementMode, WeightTransport
from core.config import Config, RolloutConfig, learner_algo
from orchestrator.placement import (
    PlacementError,
    PlacementPlan,
    Role,
    borrowable_cores,
    off_learner_node,
    pinned_cores,
    plan,
    shortfall,
)

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
    """One LearnerWorker actor per DeepSpeed rank, in its seat of the placement; the
    ranks are not started yet (LearnerGroup.start meets them at rank 0's address)."""
    import ray

    from learner.worker import CONCURRENCY_GROUPS, LearnerWorker

    cores = reserve(cfg).cores(cfg)
    actor = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(LearnerWorker)
    return [
        actor.options(**actor_options(cfg, Role.learner, rank)).remote(
            model_path,
            cfg.learner,
            learner_algo(cfg),
            cfg.rollout.temperature,
            rank,
            cfg.learner.num_ranks,
            cfg.trainer.seed,
            cores.learner[rank],
            cores.learner_spare[rank],
        )
        for rank in range(cfg.learner.num_ranks)
    ]


def rollout_worker(cfg: Config, model_path: str, index: int) -> Any:
    """Rollout worker `rollout-<index>` in its seat (its engine bound to a core on CPU)."""
    import ray

    from rollout.worker import RolloutWorker

    core = reserve(cfg).cores(cfg).rollout[index]
    return (
        ray.remote(RolloutWorker)
        .options(**actor_options(cfg, Role.rollout, index), max_concurrency=100_000)
        .remote(
            worker_id(index),
            model_path,
            rollout_config(cfg),
            cfg.model.dtype,
            cfg.trainer.seed + index,
            core,
        )
    )


def rollout_config(cfg: Config) -> RolloutConfig:
    """`cfg.rollout` as a worker of this placement runs it: only colocated GPU workers
    sleep (rollout.sleep_level), so only they ask vLLM for its sleep mode (on CPU
    there is no device memory to free: vLLM's CPU workers ignore the call)."""
    if cfg.placement == PlacementMode.colocated and cfg.rollout.gpus_per_worker > 0:
        return cfg.rollout
    return dataclasses.replace(cfg.rollout, sleep_level=0)


def env_pool(cfg: Config, model_path: str, workers: dict[str, Any], index: int) -> Any:
    """Env pool `pool-<index>`, placing turns on `workers`."""
    import ray

    from rollout.envpool import EnvPool

    return (
        ray.remote(EnvPool)
        .options(**actor_options(cfg, Role.env, index), max_concurrency=100_000)
        .remote(f"pool-{index}", workers, model_path, cfg.env, cfg.rollout)
    )


def actor_options(cfg: Config, role: Role, index: int) -> dict[str, Any]:
    """The resources and placement-group bundle actor `index` of `role` is created
    with (every actor of a run, and the placement tests' probes, take these)."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    reservation = reserve(cfg)
    seat = reservation.plan.seat(role, index)
    strategy = PlacementGroupSchedulingStrategy(
        placement_group=reservation.groups[seat.group], placement_group_bundle_index=seat.bundle
    )
    return {"num_cpus": seat.num_cpus, "num_gpus": seat.num_gpus, "scheduling_strategy": strategy}


@dataclass(frozen=True)
class Reservation:
    """A plan's placement groups, ready, and the nodes their bundles landed on."""

    plan: PlacementPlan
    groups: dict[Role, Any]
    rollout_nodes: list[str]
    learner_nodes: list[str]
    node_cores: dict[str, int]
    """CPU cores Ray counts on each node."""

    def cores(self, cfg: Config) -> Cores:
        """Where `cfg`'s CPU actors are pinned in these seats (runs with one shape
        share a reservation, but the pins follow each run's mode and knobs)."""
        nodes = (cfg, self.rollout_nodes, self.learner_nodes, self.node_cores)
        rollout, learner = pinned_cores(*nodes)
        return Cores(rollout, learner, borrowable_cores(*nodes))


@dataclass(frozen=True)
class Cores:
    """The core each rollout engine is bound to, the cores each learner rank is bound
    to, and the engines' cores each rank may borrow while they idle (None or empty:
    not pinned; orchestrator.placement)."""

    rollout: list[int | None]
    learner: list[tuple[int, ...] | None]
    learner_spare: list[tuple[int, ...]]


_RESERVED: dict[tuple[str, PlacementPlan], Reservation] = {}
"""Reservations of this driver, by Ray job and plan: an actor replaced later (a dead
worker, a restored learner) takes the same seat; systems with one shape share them."""


def reserve(cfg: Config) -> Reservation:
    """The placement groups `cfg` asks for, created and ready (once per Ray job and
    plan). Fails in one line, before any actor starts, when the cluster cannot hold
    them (PlacementError), or when they are not ready within ray.placement_timeout_s."""
    import ray

    wanted = plan(cfg)
    key = (ray.get_runtime_context().get_job_id(), wanted)
    if key not in _RESERVED:
        alive = [n for n in ray.nodes() if n["Alive"]]
        missing = shortfall(wanted, ray.cluster_resources(), [n["Resources"] for n in alive])
        if missing:
            raise PlacementError(f"placement: {missing}")
        groups = _placement_groups(wanted, cfg.ray.placement_timeout_s)
        nodes = {g: _bundle_nodes(pg) for g, pg in groups.items()}
        node_cores = {n["NodeID"]: int(n["Resources"].get("CPU", 1)) for n in alive}
        rollout_nodes = [nodes[s.group][s.bundle] for s in wanted.rollout]
        learner_nodes = [nodes[s.group][s.bundle] for s in wanted.learner]
        _RESERVED[key] = Reservation(wanted, groups, rollout_nodes, learner_nodes, node_cores)
    return _RESERVED[key]


def check_weight_reach(cfg: Config, reservation: Reservation) -> None:
    """Refuse, in one line, rollout workers placed off the learner's node when
    `rollout.weight_transport=shm` (a shared-memory file cannot reach them)."""
    away = off_learner_node(reservation.rollout_nodes, reservation.learner_nodes)
    if away and cfg.rollout.weight_transport == WeightTransport.shm:
        raise PlacementError(
            f"placement: rollout worker(s) {', '.join(worker_id(i) for i in away)} landed "
            "on another node than learner rank 0, but rollout.weight_transport=shm reaches "
            "only workers on the learner's node: use rollout.weight_transport=auto, or "
            "give the learner's node room for every rollout worker"
        )


def release(cfg: Config) -> None:
    """Remove the placement groups `reserve(cfg)` created in this Ray job (a later
    `reserve` creates them anew)."""
    import ray
    from ray.util.placement_group import remove_placement_group

    key = (ray.get_runtime_context().get_job_id(), plan(cfg))
    reservation = _RESERVED.pop(key, None)
    for group in reservation.groups.values() if reservation else ():
        remove_placement_group(group)


def _placement_groups(wanted: PlacementPlan, timeout_s: float) -> dict[Role, Any]:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    groups: dict[Role, Any] = {}
    for group in wanted.groups:
        bundles = [b.resources() for b in group.bundles]
        groups[group.name] = placement_group(bundles, strategy=group.strategy)
        try:
            ray.get(groups[group.name].ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            for created in groups.values():
                remove_placement_group(created)
            raise PlacementError(
                f"placement: {group.label} not placed after {timeout_s:.0f}s "
                f"(ray.placement_timeout_s) waiting for bundles {bundles} ({group.strategy}); "
                "the cluster has them in total, so other actors or jobs hold them"
            ) from exc
    return groups


def _bundle_nodes(group: Any) -> dict[int, str]:
    from ray.util.placement_group import placement_group_table

    return {int(i): n for i, n in placement_group_table(group)["bundles_to_node_id"].items()}


def kill(actor: Any) -> None:
    """Kill an actor that may be gone already."""
    import ray

    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - it is being killed because it is unwanted or gone
        pass


def worker_id(index: int) -> str:
    return f"rollout-{index}"
