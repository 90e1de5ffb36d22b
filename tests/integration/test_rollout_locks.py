"""Multi-turn rollout locking on two real vLLM workers, through real training runs.

Each test trains the shared system a few steps under one `rollout.lock` policy
and checks, on every trajectory the learner received, the versions of its
tokens turn by turn:
- trajectory: one version per trajectory, while versions advance across the run;
- turn: one version per turn, and some trajectory whose turns differ (on
  ScriptedTurns, whose episodes outlast a training step whatever the policy has
  become: calculator episodes shrink to one turn once earlier runs on the shared
  system taught the policy to skip the tool);
- none: versions never go backwards inside a trajectory (the mid-generation
  case is pinned down on one engine in test_rollout_engines).
"""

from __future__ import annotations

import pytest

from core.config import EnvConfig, LoggerConfig
from core.metrics import MetricsLogger
from orchestrator.assembly import RunState
from orchestrator.controller import train
from tests.integration.conftest import run_on

SLOW_TURNS = {
    "id": "tests.integration.scripted_turns:ScriptedTurnsEnv",
    "kwargs": {"turns": 4, "reply_s": 3.0},
}
"""Episodes of four turns 3 s apart: a publish lands between turns of some trajectory
as long as a training step (1-5 s here) is shorter than those 9 s."""


def _train(system, cfg, lock: str, run, tmp_path) -> RunState:
    cfg.rollout.lock = lock
    logger = MetricsLogger(LoggerConfig(run_dir=str(tmp_path), plot_every=0))
    logger.cfg.wandb.enabled = False
    try:
        return run(train(system, cfg, logger))
    finally:
        logger.close()
        cfg.rollout.lock = "turn"


@pytest.fixture(scope="module")
def trajectory_run(running_system, event_loop_runner, tmp_path_factory):
    system, cfg = running_system
    return _train(system, cfg, "trajectory", event_loop_runner, tmp_path_factory.mktemp("tl"))


def test_trajectory_lock_one_version_per_trajectory(trajectory_run):
    intact = [r for r in trajectory_run.trained if not r.lock_broken]
    assert len(intact) == len(trajectory_run.trained), "no drain should time out here"
    for record in intact:
        assert record.min_version == record.max_version, record
    assert len({r.min_version for r in intact}) >= 2, "versions never advanced during the run"


def test_trajectory_lock_rolls_updates_and_uses_both_workers(trajectory_run):
    history = trajectory_run.history
    assert all(h["sync/lock_broken"] == 0 for h in history if "sync/lock_broken" in h)
    assert any(h.get("sync/drain_s", 0.0) > 0.0 for h in history)
    served = {w for r in trajectory_run.trained for w in r.workers}
    assert served == {"rollout-0", "rollout-1"}
    assert all(h["rollout/placement_skew"] < 2.0 for h in history)


def test_turn_lock_one_version_per_turn_changing_between_turns(
    running_system, event_loop_runner, tmp_path
):
    system, cfg = running_system
    cfg.rollout.lock = "turn"
    env = EnvConfig(**SLOW_TURNS, group_size=cfg.env.group_size)
    state = run_on(system, cfg, env, cfg.trainer.total_steps, tmp_path, event_loop_runner)
    multi_turn = [r for r in state.trained if len(r.turn_versions) > 1]
    assert len(multi_turn) >= len(state.trained) / 2, "turns cut at max_tokens end episodes"
    for record in state.trained:
        assert all(len(turn) == 1 for turn in record.turn_versions), record
    spanning = [r for r in state.trained if len({t[0] for t in r.turn_versions}) > 1]
    assert spanning, "no trajectory saw an update between its turns"


def test_no_lock_versions_only_move_forward(running_system, event_loop_runner, tmp_path):
    system, cfg = running_system
    state = _train(system, cfg, "none", event_loop_runner, tmp_path)
    for record in state.trained:
        flat = [v for turn in record.turn_versions for v in turn]
        assert flat == sorted(flat), record
        assert record.max_version <= record.learner_version
