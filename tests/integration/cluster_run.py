"""Run as `python -m tests.integration.cluster_run POLICY OUT.json`: a short training
run on a multi-node Ray cluster on this machine, with a rollout node removed mid-run.

The cluster (ray.cluster_utils.Cluster, each node its own raylet and object store):
a head holding the learner (custom resource `trainer`) and three rollout nodes
(`rollout_node`: 1 each). Two rollout workers land on two of them, so neither is on
the learner's node: every version reaches them through Ray's object store. After
step REMOVE_AT the node of rollout-0 is removed; the supervisor replaces the worker,
whose placement-group bundle Ray re-places on the spare rollout node. The run goes
on to the end (its finish waits for a replacement under way). Then AFTER_STEPS more
steps on the same System show the replacement serving. Written to OUT.json
(tests/integration/test_cluster.py asserts on it): each step's sync metrics, where
each worker was before and after, the ledger's audit, and each live worker's prompt
logprobs beside the learner's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from core.metrics import MetricsLogger
from orchestrator.controller import train
from orchestrator.system import System
from tests.integration.conftest import TOOL_LATENCY_S, small_run_config

STEPS = 12
REMOVE_AT = 2
AFTER_STEPS = 3
PROBE_IDS = [3, 17, 42, 7, 99, 5, 64, 12]
NODE_MEMORY = {"object_store_memory": 100 * 2**20}


def cluster() -> Cluster:
    made = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"trainer": 1}, **NODE_MEMORY},
    )
    for _ in range(3):
        made.add_node(num_cpus=1, resources={"rollout_node": 1}, **NODE_MEMORY)
    made.wait_for_nodes()
    return made


def config(address: str, run_dir: Path) -> Any:
    cfg = small_run_config(
        run_dir,
        trainer__total_steps=STEPS,
        rollout__num_workers=2,
        env__num_pools=2,
        env__kwargs={"tool_latency_s": TOOL_LATENCY_S},
    )
    cfg.ray.address = address
    cfg.ray.rollout_resources, cfg.ray.learner_resources = {"rollout_node": 1}, {"trainer": 1}
    cfg.rollout.bind_cores = False  # one machine under every node: no core to call a node's own
    cfg.supervisor.interval_s = 1.0
    cfg.supervisor.health_timeout_s = 10.0
    return cfg


async def run(policy: str, out: Path, made: Cluster) -> dict[str, Any]:
    cfg = config(made.address, out.parent / "run")
    system = await System.start(cfg, policy)
    report: dict[str, Any] = {
        "learner_node": (await system.learner.group.ranks[0].placement.remote()).node_id,
        "nodes_before": dict(system.fleet.nodes),
    }
    doomed = system.fleet.nodes["rollout-0"]
    report["removed_node"] = doomed

    def progress(step: int, _metrics: dict[str, float]) -> None:
        if step == REMOVE_AT:
            node = next(n for n in made.worker_nodes if n.node_id == doomed)
            report["removed_at_s"] = time.time()
            made.remove_node(node)

    logger = MetricsLogger(cfg.logger)
    try:
        state = await train(system, cfg, logger, progress)
        report["history"] = [
            {k: v for k, v in m.items() if k.startswith(("sync/", "fault/"))} for m in state.history
        ]
        report["audit"] = {
            "balanced": state.audit.balanced,
            "unaccounted": len(state.audit.unaccounted),
            "overdue": len(state.audit.overdue),
        }
        report["ledger"] = state.ledger
        report["nodes_after"] = dict(system.fleet.nodes)
        report["dead"] = sorted(system.fleet.dead)
        report["version"] = system.fleet.version
        cfg.trainer.total_steps = AFTER_STEPS
        report["after"] = _sync_history((await train(system, cfg, logger)).history)
        report["learner_logprobs"] = await system.learner.logprobs(PROBE_IDS)
        report["worker_logprobs"] = await system.fleet.prompt_logprobs(PROBE_IDS)
    finally:
        logger.close()
        await system.shutdown()
    return report


def _sync_history(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k.startswith(("sync/", "fault/"))} for m in history]


def main() -> None:
    policy, out = sys.argv[1], Path(sys.argv[2])
    made = cluster()
    try:
        report = asyncio.run(run(policy, out, made))
        out.write_text(json.dumps(report, default=str))
    finally:
        ray.shutdown()
        made.shutdown()


if __name__ == "__main__":
    main()
