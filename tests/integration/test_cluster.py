"""A training run on a multi-node Ray cluster on this machine (issue 15): the learner
on one node, the rollout workers on others, every version carried to them through
Ray's object store, and a rollout node removed mid-run.

The run (tests/integration/cluster_run.py, in its own process so the session's
local Ray is left alone) trains cluster_run.STEPS steps with two rollout workers on
two of three rollout nodes; after step cluster_run.REMOVE_AT rollout-0's node is
removed. Asserted: no worker read the learner's shared-memory snapshot in place
(each load reports its transport: a worker on another node that read the file would
report `shm`, not `object_store+shm`), every update was confirmed (a WeightMismatch
would have stopped the run), rollout-0 came back on a remaining node (and serves in
a few steps after the run), the ledger accounts for every trajectory, and each
worker's logprobs are the learner's at the end. ~100 s here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_run import STEPS
from tests.integration.conftest import LOGPROB_TOLERANCE

ROOT = Path(__file__).resolve().parents[2]
RUN_BOUND_S = 480
CROSS_NODE = "sync/transport/object_store+shm"


@pytest.fixture(scope="module")
def report(tiny_policy, tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("cluster") / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.cluster_run", tiny_policy, str(out)],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
        check=False,
    )
    assert done.returncode == 0 and out.exists(), done.stderr[-4000:]
    return json.loads(out.read_text())


def test_rollout_workers_run_off_the_learners_node(report):
    before = report["nodes_before"]
    assert report["learner_node"] not in before.values()
    assert len(set(before.values())) == 2


def test_every_update_crossed_nodes_through_the_object_store(report):
    synced = [m for m in report["history"] if "sync/pause_s" in m]
    assert len(synced) >= STEPS - 1  # each step reports the previous publish
    for metrics in synced:
        assert metrics[CROSS_NODE] >= 1
        assert not any(k.startswith("sync/transport/") and k != CROSS_NODE for k in metrics)
        assert metrics["sync/object_store_bytes"] >= metrics["sync/bytes"] > 0
        assert metrics["sync/shm_bytes"] == metrics["sync/object_store_bytes"]  # staged, loaded


def test_a_removed_rollout_node_s_worker_comes_back_on_a_remaining_node(report):
    removed, after = report["removed_node"], report["nodes_after"]
    assert report["nodes_before"]["rollout-0"] == removed
    assert after["rollout-0"] not in (removed, report["learner_node"], after["rollout-1"])
    assert report["dead"] == [] and report["history"][-1]["fault/worker_restarts"] == 1
    assert report["version"] == STEPS
    after = [m for m in report["after"] if "sync/pause_s" in m]
    assert after and all(m[CROSS_NODE] == 2 for m in after)  # and it serves again


def test_nothing_was_lost(report):
    assert report["audit"] == {"balanced": True, "unaccounted": 0, "overdue": 0}
    states = set(report["ledger"]["states"].values())
    assert "lost" not in states and "trained" in states


def test_every_worker_holds_the_learners_weights_at_the_end(report):
    learner = report["learner_logprobs"]
    for worker, logprobs in report["worker_logprobs"].items():
        gap = max(abs(a - b) for a, b in zip(logprobs, learner, strict=True))
        assert gap < LOGPROB_TOLERANCE, worker
