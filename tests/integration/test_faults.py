"""Faults during a real training run: a rollout worker, an env pool and the
learner's rank are killed mid-run. The run finishes every step; the supervisor
replaces the worker (which then serves the current weights), the producer
replaces the pool and re-runs its groups, the learner is restored from the
run's last checkpoint and the step retried; the ledger balances and no
trajectory is trained twice."""

from __future__ import annotations

import asyncio
import copy

from core.config import LoggerConfig
from core.metrics import MetricsLogger
from orchestrator.controller import train
from tests.integration.conftest import LOGPROB_TOLERANCE
from tests.integration.test_system import _max_diff, probe_ids  # noqa: F401 - fixture

VICTIM = "rollout-1"


def test_killed_worker_and_pool_are_replaced_and_nothing_is_lost(
    running_system,
    probe_ids,  # noqa: F811
    event_loop_runner,
    tmp_path,
):
    import ray

    system, shared = running_system
    cfg = copy.deepcopy(shared)
    cfg.trainer.total_steps = 6
    cfg.trainer.checkpoint_every = 2
    cfg.logger.run_dir = str(tmp_path)
    cfg.supervisor.interval_s = 0.5
    first_version = system.fleet.version
    old_worker, old_pool = system.fleet.workers[VICTIM], system.fleet.pools[0]
    old_learner = system.learner.group
    logger = MetricsLogger(LoggerConfig(run_dir=str(tmp_path), plot_every=0))
    logger.cfg.wandb.enabled = False

    async def kill_once_training_is_under_way():
        while system.fleet.version < first_version + 2:
            await asyncio.sleep(0.05)
        ray.kill(old_worker)
        ray.kill(old_pool)
        while system.fleet.version < first_version + 3:  # after the first checkpoint
            await asyncio.sleep(0.05)
        ray.kill(old_learner.ranks[0])

    async def scenario():
        killer = asyncio.create_task(kill_once_training_is_under_way())
        state = await train(system, cfg, logger)
        await killer
        return state

    state = event_loop_runner(scenario())
    logger.close()

    assert len(state.history) == cfg.trainer.total_steps
    last = state.history[-1]
    assert last["fault/worker_restarts"] >= 1 and last["fault/pool_restarts"] >= 1
    assert last["fault/learner_restarts"] == 1 and system.learner.group is not old_learner
    assert last["ledger/balanced"] == 1.0
    assert last["ledger/trained_more_than_once"] == 0
    ids = [r.trajectory_id for r in state.trained]
    assert len(ids) == len(set(ids))
    assert system.fleet.workers[VICTIM] is not old_worker and system.fleet.pools[0] is not old_pool

    learner = event_loop_runner(system.learner.logprobs(probe_ids))
    for worker_id, engine in event_loop_runner(system.fleet.prompt_logprobs(probe_ids)).items():
        assert _max_diff(learner, engine) < LOGPROB_TOLERANCE, worker_id
