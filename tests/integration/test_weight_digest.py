"""Every update ends with each worker confirming the version and the checksum of each
tensor it holds (issue 15, item 2), on the shared System's real vLLM workers: after a
real update the worker's digest equals the learner's with every tensor confirmed
(q/k/v and gate/up, which vLLM fuses, included); a snapshot file altered after the
learner checksummed it is caught, naming the worker and the tensor; a publish logs its
transport, bytes and seconds. The worker is left holding the fleet's weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.shm import WeightSnapshot, remove_snapshot
from orchestrator.fleet import Fleet, WeightMismatch, confirm

WORKER = "rollout-0"
VERSION = 7000
"""Labels of this module's snapshots (never the run's own)."""


@pytest.fixture
def worker(running_system, event_loop_runner):
    """rollout-0, given back holding the fleet's current weights and version."""
    system, _ = running_system
    handle = system.fleet.workers[WORKER]
    yield handle
    published = system.fleet.published
    snapshot = published or event_loop_runner(system.learner.export_weights(system.fleet.version))
    event_loop_runner(handle.update_weights.remote(snapshot, "turn"))
    if published is None:
        remove_snapshot(snapshot)


def _flip_low_bit(snapshot: WeightSnapshot, name: str) -> None:
    """Alter the first element of tensor `name` in the snapshot's file (one ulp of an
    fp32), after the learner has checksummed it."""
    entry = next(e for e in snapshot.entries if e.name == name)
    with Path(snapshot.path).open("r+b") as handle:
        handle.seek(entry.offset)
        low = handle.read(1)[0]
        handle.seek(entry.offset)
        handle.write(bytes([low ^ 1]))


def test_the_worker_holds_the_learners_digest_after_a_real_update(
    running_system, worker, event_loop_runner
):
    system, _ = running_system
    snapshot = event_loop_runner(system.learner.export_weights(VERSION))
    try:
        sync = event_loop_runner(worker.update_weights.remote(snapshot, "turn"))
        confirm(WORKER, sync, snapshot)
        assert sync.version == VERSION and sync.digest == snapshot.digest
        assert None not in sync.checksums, "every learner tensor is confirmed"
        fused = [e.name for e in snapshot.entries if "q_proj" in e.name or "up_proj" in e.name]
        assert fused, "the policy has the tensors vLLM fuses"
        assert sync.transport == "shm" and sync.transfers[0].bytes == snapshot.total_bytes
        print(
            f"digest on a worker, {snapshot.total_bytes / 1e6:.1f} MB: {sync.digest_s * 1e3:.2f} ms"
        )
    finally:
        remove_snapshot(snapshot)


def test_a_snapshot_altered_after_export_is_caught_with_the_worker_and_tensor(
    running_system, worker, event_loop_runner
):
    system, _ = running_system
    snapshot = event_loop_runner(system.learner.export_weights(VERSION + 1))
    name = next(
        e.name for e in snapshot.entries if e.name.endswith("layers.1.self_attn.k_proj.weight")
    )
    _flip_low_bit(snapshot, name)
    try:
        sync = event_loop_runner(worker.update_weights.remote(snapshot, "turn"))
        assert sync.version == VERSION + 1 and sync.digest != snapshot.digest
        with pytest.raises(WeightMismatch, match=rf"^{WORKER} holds weights .*: {name}$"):
            confirm(WORKER, sync, snapshot)
    finally:
        remove_snapshot(snapshot)


def test_a_publish_logs_its_transport_bytes_seconds_and_digest_cost(
    running_system, worker, event_loop_runner
):
    system, cfg = running_system
    side = Fleet(cfg, system.model_path, {WORKER: worker}, [])  # the same worker, no pools
    snapshot = event_loop_runner(system.learner.export_weights(VERSION + 2))
    try:
        metrics = event_loop_runner(side.publish(snapshot))
    finally:
        remove_snapshot(snapshot)
    assert metrics["sync/transport/shm"] == 1.0
    assert metrics["sync/shm_bytes"] == float(snapshot.total_bytes)
    assert 0 < metrics["sync/shm_s"] <= metrics["sync/total_s"]
    assert metrics["sync/unconfirmed_tensors"] == 0.0
    assert 0 < metrics["sync/digest_s"] < 0.5
