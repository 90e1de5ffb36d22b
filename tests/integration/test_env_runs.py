"""Short real runs on the library's envs and on a flaky env, on the shared system.

Each run swaps the system's env pools for pools of another env (same vLLM
workers, same learner) and trains through the normal controller loop, so every
env's trajectories go through the agent loop, the buffer and a DeepSpeed step.
The tiny policy only ever saw calculator dialogues: these runs check the path
(trajectories, reward components, training), not the rewards' size.
"""

from __future__ import annotations

import pytest

from core.config import EnvConfig
from orchestrator.env_faults import EnvCircuitOpen
from tests.integration.conftest import run_on


@pytest.mark.parametrize(
    "env_id, kwargs, components",
    [
        ("asyncrl/Code-v0", {"max_turns": 2}, {"reward/passed", "reward/format"}),
        ("asyncrl/Search-v0", {"max_turns": 3}, {"reward/correct", "reward/format"}),
        (
            "asyncrl/ReasoningGym-v0",
            {"dataset": "basic_arithmetic", "size": 200},
            {"reward/correct", "reward/format"},
        ),
    ],
)
def test_short_run_trains_on_env(
    running_system, event_loop_runner, tmp_path, env_id, kwargs, components
):
    system, cfg = running_system
    env = EnvConfig(id=env_id, kwargs=kwargs, group_size=cfg.env.group_size)
    state = run_on(system, cfg, env, 1, tmp_path, event_loop_runner)
    last = state.history[-1]
    assert components <= set(last), sorted(k for k in last if k.startswith("reward/"))
    assert last["rollout/trajectories"] == cfg.buffer.groups_per_batch * cfg.env.group_size
    assert last["rollout/status_completed"] + last["rollout/status_truncated"] > 0
    assert last["ledger/balanced"] == 1.0 and "learner/loss" in last
    assert len(state.trained) == cfg.buffer.groups_per_batch * cfg.env.group_size


FLAKY = "tests.integration.scripted_turns:ScriptedTurnsEnv"
"""Faults injected by the env whatever the model writes: a calculator's outages
reach only episodes that call it, and the shared policy may have stopped doing so."""


def test_flaky_env_groups_are_rerun_and_nothing_is_lost(
    running_system, event_loop_runner, tmp_path
):
    system, cfg = running_system
    env = EnvConfig(
        id=FLAKY,
        kwargs={"turns": 2, "failure_rate": 0.15},
        group_size=cfg.env.group_size,
        breaker_failure_rate=1.0,
    )
    state = run_on(system, cfg, env, 2, tmp_path, event_loop_runner)
    last = state.history[-1]
    assert last["fault/group_reruns"] >= 1 and last["ledger/rerun"] >= 1
    assert last["ledger/failed"] >= 1 and last["ledger/balanced"] == 1.0
    assert last["ledger/trained_more_than_once"] == 0


def test_env_that_keeps_failing_trips_its_breaker(running_system, event_loop_runner, tmp_path):
    system, cfg = running_system
    env = EnvConfig(
        id=FLAKY,
        kwargs={"turns": 2, "failure_rate": 1.0},
        group_size=cfg.env.group_size,
        breaker_window=8,
        breaker_failure_rate=0.25,
    )
    with pytest.raises(EnvCircuitOpen, match=r"ScriptedTurnsEnv failed \d+ of its last 8 episodes"):
        run_on(system, cfg, env, 3, tmp_path, event_loop_runner)
