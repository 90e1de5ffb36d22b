"""Exact resume of the learner: four steps straight, or two, a DeepSpeed
checkpoint, a fresh learner group that loads it, and two more, give the same
weights bit for bit (CPU, same thread count: deterministic kernels)."""

from __future__ import annotations

import torch

from core.shm import read_snapshot
from orchestrator.learners import LearnerGroup
from tests.integration.conftest import small_run_config
from tests.integration.test_learner_ranks import _batch

STEPS = 4


def _weights(run, group, directory, version):
    snapshot = run(group.export_weights(directory, version))
    return {name: tensor.clone() for name, tensor in read_snapshot(snapshot)}


def test_stop_and_resume_gives_the_same_weights(
    ray_cluster, tiny_policy, tmp_path, event_loop_runner
):
    run = event_loop_runner
    cfg = small_run_config(tmp_path)
    cfg.learner.lr_warmup_steps = 3  # the LR schedule's position must survive too

    straight = run(LearnerGroup.start(cfg, tiny_policy))
    try:
        for version in range(STEPS):
            run(straight.train_step(_batch(version, seed=version)))
        expected = _weights(run, straight, tmp_path / "straight", STEPS)
    finally:
        straight.kill()

    first = run(LearnerGroup.start(cfg, tiny_policy))
    try:
        for version in range(STEPS // 2):
            run(first.train_step(_batch(version, seed=version)))
        run(first.save_checkpoint(str(tmp_path / "ckpt"), "step2"))
    finally:
        first.kill()

    resumed = run(LearnerGroup.start(cfg, tiny_policy))
    try:
        assert run(resumed.load_checkpoint(str(tmp_path / "ckpt"), "step2")) == STEPS // 2
        for version in range(STEPS // 2, STEPS):
            run(resumed.train_step(_batch(version, seed=version)))
        got = _weights(run, resumed, tmp_path / "resumed", STEPS)
    finally:
        resumed.kill()

    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
