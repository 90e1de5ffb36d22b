"""Run as `python -m tests.integration.placement_probe`: a Ray cluster of three nodes
on this machine (a CPU head, two nodes declaring 2 GPUs each: Ray assigns GPU ids
without CUDA), and tiny probe actors created with exactly the options the run's
actors get (orchestrator.actors.actor_options), for split and colocated placement
and for requests the cluster cannot hold. Prints what each probe saw as one JSON
object (tests/integration/test_placement.py asserts on it). No vLLM, no DeepSpeed.
"""

from __future__ import annotations

import json
from typing import Any

import ray
from ray.cluster_utils import Cluster

from core.config import Config
from core.records import Placement
from orchestrator import actors
from orchestrator.placement import PlacementError, Role

TIMEOUT_S = 60


class Probe:
    def placement(self) -> Placement:
        return Placement.here()


def config(workers: int, ranks: int, placement: str = "split", gpus: int = 1) -> Config:
    cfg = Config()
    cfg.rollout.num_workers, cfg.learner.num_ranks, cfg.env.num_pools = workers, ranks, 2
    cfg.rollout.gpus_per_worker, cfg.learner.gpus_per_rank = gpus, 1
    cfg.placement = placement
    cfg.ray.placement_timeout_s = 2.0
    return cfg


def probe(cfg: Config) -> dict[str, list[list[Any]]]:
    """Where a probe in every seat of `cfg`'s plan runs: [node id, GPU ids] per seat."""
    probe_actor = ray.remote(Probe)
    counts = {Role.rollout: cfg.rollout.num_workers, Role.learner: cfg.learner.num_ranks}
    counts[Role.env] = cfg.env.num_pools
    seen: dict[str, list[list[Any]]] = {}
    for role, count in counts.items():
        handles = [
            probe_actor.options(**actors.actor_options(cfg, role, i)).remote() for i in range(count)
        ]
        where = ray.get([h.placement.remote() for h in handles], timeout=TIMEOUT_S)
        seen[role.value] = [[w.node_id, list(w.gpu_ids)] for w in where]
        for handle in handles:
            ray.kill(handle)
    return seen


def refusal(cfg: Config) -> str:
    try:
        actors.reserve(cfg)
    except PlacementError as exc:
        return str(exc)
    return "reserved"


def weight_reach(cfg: Config, transport: str) -> str:
    """What a System would say of this reservation before starting any actor, with
    rollout.weight_transport=`transport`."""
    cfg.rollout.weight_transport = transport
    try:
        actors.check_weight_reach(cfg, actors.reserve(cfg))
    except PlacementError as exc:
        return str(exc)
    return "reachable"


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1, num_gpus=2)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    try:
        split, colocated = config(2, 1), config(2, 2, "colocated")
        report: dict[str, Any] = {"split": probe(split)}
        report["weight_reach"] = {t: weight_reach(split, t) for t in ("shm", "auto")}
        actors.release(split)
        report["colocated"] = probe(colocated)
        report["too_many"] = refusal(config(2, 1, gpus=2))  # 5 GPUs asked of 4
        report["held"] = refusal(config(2, 1))  # 3 of 4 GPUs, 2 held by `colocated`
        print("PLACEMENT " + json.dumps(report), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
