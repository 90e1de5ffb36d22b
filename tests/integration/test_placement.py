"""Placement on a Ray cluster declared with GPUs on this CPU machine (issue 15): each
rollout worker and learner rank gets the GPUs its config asks for, split placement
never shares a device between the planes, colocated does, env pools spread over
nodes, and requests the cluster cannot hold fail before any actor starts, in one
line naming the role and what is missing.

The cluster (ray.cluster_utils.Cluster: a head and two 2-GPU nodes) runs in its own
process (tests/integration/placement_probe.py) so the session's local Ray and the
System started on it are left alone; probes take exactly the options the run's
actors take (orchestrator.actors.actor_options). ~30 s here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROBE_BOUND_S = 240


@pytest.fixture(scope="module")
def seen() -> dict[str, Any]:
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.placement_probe"],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROBE_BOUND_S,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("PLACEMENT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("PLACEMENT "))


def _devices(seats: list[list[Any]]) -> list[tuple[str, str]]:
    return [(node, gpu) for node, gpus in seats for gpu in gpus]


def test_split_gives_every_worker_and_rank_its_own_gpu(seen):
    split = seen["split"]
    assert [len(gpus) for _, gpus in split["rollout"] + split["learner"]] == [1, 1, 1]
    devices = _devices(split["rollout"] + split["learner"])
    assert len(set(devices)) == 3  # no GPU shared, within or between the planes


def test_env_pools_are_cpu_only_and_spread_over_nodes(seen):
    pools = seen["split"]["env"]
    assert all(gpus == [] for _, gpus in pools)
    assert len({node for node, _ in pools}) == 2


def test_colocated_ranks_share_the_workers_gpus(seen):
    colocated = seen["colocated"]
    rollout, learner = _devices(colocated["rollout"]), _devices(colocated["learner"])
    assert len(rollout) == len(learner) == 2 and len(set(rollout)) == 2
    assert learner == rollout  # rank i on worker i's GPU


def test_more_gpus_than_the_cluster_has_fails_in_one_line_naming_the_role(seen):
    line = seen["too_many"]
    assert "\n" not in line
    assert line.startswith("placement: cannot place learner (1 ranks x 1 GPU): missing 1 GPU")


def test_resources_held_elsewhere_fail_after_the_placement_timeout_naming_the_group(seen):
    line = seen["held"]
    assert "\n" not in line
    assert line.startswith("placement: learner (1 ranks x 1 GPU) not placed after 2s")


def test_workers_the_shared_memory_weights_cannot_reach_are_refused_in_one_line(seen):
    # split put the rollout workers and the learner on different nodes (asserted above):
    # forced shm cannot reach them, auto takes the object store for them
    line = seen["weight_reach"]["shm"]
    assert "\n" not in line and line.startswith("placement: rollout worker(s) rollout-")
    assert "rollout.weight_transport=auto" in line
    assert seen["weight_reach"]["auto"] == "reachable"
