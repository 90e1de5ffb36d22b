"""Cross-node weight sync benchmark: the pause a weight update causes on a rollout
worker on another Ray node (object store, then node-local shared memory) against one
on the learner's node (the snapshot read in place), for three model sizes, side by
side in one run (not a test).

    python -m bench.cross_node_sync [--updates 3] [--sizes small,medium,large] [--json PATH]

A Ray cluster of two nodes on this machine (ray.cluster_utils.Cluster: each node
its own raylet and object store, so a cross-node object moves between two stores as
it would between machines, through this machine's loopback instead of a network).
For each size (bench.weight_sync's random tiny Qwen3s), two real rollout workers
(rollout.worker.RolloutWorker, a vLLM engine each): `near` on the node where the
weights are written, `far` on the other. Each update: the snapshot is written to
shared memory as the learner writes it, its bytes put into the object store as
learner rank 0 does (`put`), then `near` and `far` load it one after the other with
rollout.weight_transport=auto (so `near` reads in place and `far` fetches and
stages first). Reported per size (medians of `--updates` after one warm-up):
the pause each worker's generation saw, the far worker's fetch (before its pause)
and the put; ratios far / near for the pause and for everything the far path adds
(put + fetch + pause).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.preamble import environment
from bench.record import write_json
from bench.weight_sync import SIZES, ensure_model, size_args
from core.config import Config, RolloutConfig
from core.shm import DEFAULT_ROOT, remove_snapshot, snapshot_bytes, write_snapshot

NODE_OBJECT_STORE = 1 << 30
MAX_MODEL_LEN = 2048
START_TIMEOUT_S = 600


def main() -> None:
    args = _parse()
    environment(vllm=True)
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.actors import start_ray

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"near": 1},
            "object_store_memory": NODE_OBJECT_STORE,
        },
    )
    cluster.add_node(num_cpus=1, resources={"far": 1}, object_store_memory=NODE_OBJECT_STORE)
    cluster.wait_for_nodes()
    cfg = Config()
    cfg.ray.address = cluster.address
    start_ray(cfg)
    results = {}
    try:
        for name in args.sizes.split(","):
            results[name] = _measure(ensure_model(name, SIZES[name]), args.updates)
            _print_one(name, results[name])
    finally:
        ray.shutdown()
        cluster.shutdown()
    _print_table(results, args.updates)
    write_json(args.json, "cross_node_sync", {"updates": args.updates, "sizes": results})


def _measure(model_path: str, updates: int) -> dict[str, Any]:
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from rollout.worker import RolloutWorker

    state = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).state_dict()
    here = ray.get_runtime_context().get_node_id()
    rollout = RolloutConfig(max_model_len=MAX_MODEL_LEN, max_num_seqs=8)
    worker = ray.remote(RolloutWorker)
    near, far = (
        worker.options(resources={where: 1}, max_concurrency=8).remote(
            where, model_path, rollout, "float32", 0
        )
        for where in ("near", "far")
    )
    directory = Path(DEFAULT_ROOT) / f"asyncrl-bench-cross-{os.getpid()}"
    try:
        ray.get([near.start.remote(), far.start.remote()], timeout=START_TIMEOUT_S)
        samples = [_update(near, far, state, directory, here, v) for v in range(updates + 1)]
    finally:
        for handle in (near, far):
            ray.kill(handle)
        shutil.rmtree(directory, ignore_errors=True)
    measured = samples[1:]  # the first is a warm-up
    result = {k: statistics.median(s[k] for s in measured) for k in measured[0]}
    result["pause_far_over_near"] = result["far_pause_s"] / result["near_pause_s"]
    far_total = result["put_s"] + result["fetch_s"] + result["far_pause_s"]
    result["far_total_over_near_pause"] = far_total / result["near_pause_s"]
    return result


def _update(
    near: Any, far: Any, state: dict, directory: Path, node_id: str, version: int
) -> dict[str, float]:
    import ray

    path = directory / f"policy-v{version}.bin"
    snapshot = dataclasses.replace(write_snapshot(path, state.items(), version), node_id=node_id)
    started = time.perf_counter()
    payload = ray.put(snapshot_bytes(snapshot))
    put_s = time.perf_counter() - started
    near_sync = ray.get(near.update_weights.remote(snapshot, "turn", None))
    far_sync = ray.get(far.update_weights.remote(snapshot, "turn", [payload]))
    remove_snapshot(snapshot)
    if (near_sync.transport, far_sync.transport) != ("shm", "object_store+shm"):
        raise RuntimeError(f"unexpected transports {near_sync.transport}, {far_sync.transport}")
    fetched = next(t for t in far_sync.transfers if t.transport == "object_store")
    return {
        "bytes": float(snapshot.total_bytes),
        "near_pause_s": near_sync.pause_s,
        "far_pause_s": far_sync.pause_s,
        "fetch_s": fetched.seconds,
        "put_s": put_s,
    }


def _print_one(name: str, r: dict[str, Any]) -> None:
    print(
        f"\n{name}: {r['bytes'] / 1e6:.1f} MB; pause near {r['near_pause_s']:.3f}s, "
        f"far {r['far_pause_s']:.3f}s; far's fetch {r['fetch_s']:.3f}s (before its pause), "
        f"put {r['put_s']:.3f}s",
        flush=True,
    )


def _print_table(results: dict[str, dict[str, Any]], updates: int) -> None:
    title = "cross-node (object store) vs same-node (shm) weight sync"
    print(f"\n{title} ({updates} updates, medians)")
    print(
        f"  {'size':<7} {'MB':>7} {'pause far/near':>14} {'(put+fetch+pause) far/near':>27} "
        f"{'near pause s':>12} {'far pause s':>11} {'fetch s':>8} {'put s':>7}"
    )
    for name, r in results.items():
        print(
            f"  {name:<7} {r['bytes'] / 1e6:>7.1f} {r['pause_far_over_near']:>13.2f}x "
            f"{r['far_total_over_near_pause']:>26.2f}x {r['near_pause_s']:>12.3f} "
            f"{r['far_pause_s']:>11.3f} {r['fetch_s']:>8.3f} {r['put_s']:>7.3f}"
        )


def _parse() -> argparse.Namespace:
    return size_args(__doc__)


if __name__ == "__main__":
    main()
